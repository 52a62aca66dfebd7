"""Serving throughput under concurrency: `groundwork serve` driven by 1, 2, 8 and 32 concurrent clients.

Builds an index (`groundwork run` on the bundled samples in a new GROUNDWORK_HOME, or `--home` reuses
one), creates an API key, measures the packaged model's raw encode rate on the same queries in this
process (one at a time, and in batches of 32: the floor), then starts `groundwork serve` and drives it
with text queries from keep-alive clients (threads with one HTTP connection each): each mode (vector,
fulltext, hybrid) and a random mix, for `--seconds` per level. The semantic cache is off and every query
text is distinct, so every request embeds and searches. Printed per level: requests/s, p50, p99, errors
(non-200 answers by status, connection errors).

The last phase keeps `--clients-during-changes` clients running while the index changes under them: a
pipeline run that indexes newly landed documents, a LanceDB compaction, and a promotion of another model
version followed by a rollback (each a new active table). Every response must be a 200 naming one table
and version; afterwards the new documents must be served.

    python -m benchmarks.serve_throughput [--home DIR] [--seconds 8] [--check]

Targets (issue 23): 8 clients (mix) >= 100 requests/s and >= 0.25x the batched raw encode rate, p99 <=
250 ms; one client p50 <= 25 ms; 32 clients no errors and a bounded p99 (<= 1 s); no 5xx and no
connection error while the index changes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("LANCEDB_LOG", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from benchmarks.startup import command_env, create_api_key, free_port, groundwork, seed_landing

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODES = ("vector", "fulltext", "hybrid")
LEVELS = (1, 2, 8, 32)
NEW_DOCUMENTS = {
    "bench/late-delivery.md": "# Late deliveries\n\nA parcel later than ten business days is refunded "
    "in full when the customer reports it through the order page.\n",
    "bench/loyalty-points.md": "# Loyalty points\n\nEvery euro spent earns one loyalty point; points expire "
    "after eighteen months without a purchase.\n",
    "bench/warranty-claims.md": "# Warranty claims\n\nA warranty claim needs the serial number, the invoice "
    "and a photo of the defect; claims are answered within seven days.\n",
}


@dataclass
class LevelResult:
    clients: int
    mode: str
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    versions: set = field(default_factory=set)
    server_cores: float = float("nan")  # the server's CPU seconds per second of the level
    client_cores: float = float("nan")  # the same for this process's client threads (same two cores)

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def distinct_queries(home: Path, n: int, seed: int = 7) -> list[str]:
    """``n`` distinct questions-like queries from the index's own chunk texts (runs of 5-10 words)."""
    import lancedb

    from resources.lancedb.tables import active_table_name

    db = lancedb.connect(str(home / "lancedb"))
    table = db.open_table(active_table_name(db, "chunk_embeddings"))
    words = [re.findall(r"[A-Za-z][A-Za-z'-]+", text) for text in table.to_arrow()["text"].to_pylist()]
    words = [w for w in words if len(w) >= 12]
    rng = random.Random(seed)
    queries: set[str] = set()
    while len(queries) < n:
        chunk = rng.choice(words)
        start = rng.randrange(0, len(chunk) - 10)
        queries.add(" ".join(chunk[start : start + rng.randint(5, 10)]))
    return sorted(queries, key=lambda _: rng.random())


def raw_encode_rates(queries: list[str]) -> tuple[float, float]:
    """The packaged model in this process: queries/s one at a time, and in batches of 32."""
    from models.embedding_model import encode, load_model, packaged_model_path

    model = load_model(str(packaged_model_path()), "cpu")
    encode(model, queries[:32], 32)  # warm-up
    sample = queries[:200]
    started = time.perf_counter()
    for q in sample:
        encode(model, [q], 1)
    single = len(sample) / (time.perf_counter() - started)
    batched_sample = queries[:1024]
    started = time.perf_counter()
    encode(model, batched_sample, 32)
    batched = len(batched_sample) / (time.perf_counter() - started)
    return single, batched


class Load:
    """``clients`` threads posting /search on keep-alive connections until stopped."""

    def __init__(self, port: int, key: str, queries: list[str], clients: int, mode: str, seed: int):
        self.port, self.key, self.mode = port, key, mode
        self.queries = queries
        self.result = LevelResult(clients, mode, 0.0)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(seed * 1000 + i,), daemon=True)
            for i in range(clients)
        ]

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json", "X-API-Key": self.key}
        while not self._stop.is_set():
            mode = rng.choice(MODES) if self.mode == "mix" else self.mode
            body = json.dumps({"query": rng.choice(self.queries), "k": 5, "mode": mode})
            started = time.perf_counter()
            try:
                conn.request("POST", "/search", body, headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.result.errors[f"connection: {type(exc).__name__}"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            elapsed = (time.perf_counter() - started) * 1000
            with self._lock:
                if response.status == 200:
                    found = json.loads(payload)
                    version = (found["table_name"], found["table_version"])
                    if any((h["table_name"], h["table_version"]) != version for h in found["hits"]):
                        self.result.errors["hits from another table version"] += 1
                    self.result.latencies_ms.append(elapsed)
                    self.result.versions.add(version)
                else:
                    self.result.errors[f"HTTP {response.status}"] += 1
        conn.close()

    def __enter__(self) -> Load:
        self._started = time.perf_counter()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        self.result.seconds = time.perf_counter() - self._started


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(
    port: int, key: str, queries: list[str], clients: int, mode: str, seconds: float, server_pid: int
) -> LevelResult:
    server_before, clients_before = process_cpu_s(server_pid), time.process_time()
    with Load(port, key, queries, clients, mode, seed=clients) as load:
        time.sleep(seconds)
    result = load.result
    result.server_cores = (process_cpu_s(server_pid) - server_before) / result.seconds
    result.client_cores = (time.process_time() - clients_before) / result.seconds
    return result


def wait_healthy(port: int, server: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"groundwork serve exited {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no 200 from /health within {timeout_s:.0f} s")


def run_step(label: str, command: list[str], env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    print(f"  {label}: {seconds:.1f} s (exit {done.returncode})", flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed; see {log}")
    return seconds


def changes_under_load(
    port: int, key: str, queries: list[str], clients: int, env: dict, home: Path, log: Path
) -> tuple[LevelResult, bool]:
    """Clients keep querying while a pipeline run, a compaction and a promotion + rollback change the
    index; returns the load's result and whether the new documents are served afterwards."""
    landing = home / "landing" / "documents"
    for relative, text in NEW_DOCUMENTS.items():
        (landing / relative).parent.mkdir(parents=True, exist_ok=True)
        (landing / relative).write_text(text)
    compact = (
        "from datetime import timedelta; from pipelines.maintenance import maintain_lancedb; "
        "from resources import get_settings; from resources.lancedb import LanceDBStore; "
        "s = get_settings(); r = maintain_lancedb(LanceDBStore.from_settings(s).connect(), "
        "s.vector_index_min_rows, timedelta(days=s.lancedb_keep_versions_days)); print(r)"
    )
    with Load(port, key, queries, clients, "mix", seed=99) as load:
        time.sleep(2)
        run_step("pipeline run (3 new documents)", [groundwork(), "run"], env, log)
        run_step("LanceDB compaction", [sys.executable, "-c", compact], env, log)
        run_step(
            "promote a model version (max_seq_length 128)",
            [groundwork(), "models", "promote", "--max-seq-length", "128", "--tolerance", "1.0"],
            env,
            log,
        )
        time.sleep(2)
        run_step("rollback", [groundwork(), "models", "rollback"], env, log)
        time.sleep(3)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        "/search",
        json.dumps({"query": "loyalty points expire eighteen months", "k": 3, "mode": "hybrid"}),
        {"Content-Type": "application/json", "X-API-Key": key},
    )
    hits = json.loads(conn.getresponse().read())["hits"]
    served = any("loyalty" in h["path"] for h in hits)
    return load.result, served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a GROUNDWORK_HOME with an index (default: build one)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per level and mode")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--modes", default="vector,fulltext,hybrid,mix")
    parser.add_argument("--clients-during-changes", type=int, default=8)
    parser.add_argument("--skip-changes", action="store_true", help="leave out the last phase")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="groundwork-serve-bench-"))
    home = args.home or scratch / "home"
    env = command_env(home, "local[2]")
    env["GROUNDWORK_SERVE_CACHE_ENABLED"] = "false"
    log = scratch / "commands.log"
    print(f"GROUNDWORK_HOME={home}  logs in {log}", flush=True)
    if args.home is None:
        seed_landing(home)
        run_step("index the samples (groundwork run)", [groundwork(), "run"], env, log)
    queries = distinct_queries(home, 4000)
    single, batched = raw_encode_rates(queries)
    print(
        f"raw encode, packaged model in this process: {single:.0f} queries/s one at a time, "
        f"{batched:.0f}/s in batches of 32",
        flush=True,
    )
    key = create_api_key([groundwork()], env, f"bench-{time.time_ns()}")
    port = free_port()
    with open(scratch / "serve.log", "w") as out:
        server = subprocess.Popen(
            [groundwork(), "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    results: list[LevelResult] = []
    try:
        wait_healthy(port, server)
        drive(port, key, queries, 2, "mix", 2.0, server.pid)  # warm-up
        for clients in [int(c) for c in args.levels.split(",")]:
            for mode in args.modes.split(","):
                result = drive(port, key, queries, clients, mode, args.seconds, server.pid)
                results.append(result)
                errors = ", ".join(f"{k} {v}" for k, v in sorted(result.errors.items())) or "none"
                print(
                    f"  {clients:>2} clients {mode:<8} {result.rps:7.1f} req/s  p50 {result.pct(50):6.1f} ms"
                    f"  p99 {result.pct(99):6.1f} ms  errors: {errors}  CPU: server "
                    f"{result.server_cores:.2f} cores, clients {result.client_cores:.2f}",
                    flush=True,
                )
        changes = None
        if not args.skip_changes:
            print(f"index changes under {args.clients_during_changes} clients ...", flush=True)
            changes = changes_under_load(port, key, queries, args.clients_during_changes, env, home, log)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()

    def level(clients: int, mode: str = "mix") -> LevelResult | None:
        return next((r for r in results if r.clients == clients and r.mode == mode), None)

    checks = []
    eight, one, many = level(8), level(1), level(32)
    if eight:
        checks += [
            ("8 clients (mix) requests/s", f"{eight.rps:.1f}", ">= 100", eight.rps >= 100),
            ("8 clients / raw batched", f"{eight.rps / batched:.2f}x", ">= 0.25x", eight.rps >= batched / 4),
            ("8 clients p99", f"{eight.pct(99):.0f} ms", "<= 250 ms", eight.pct(99) <= 250),
        ]
    if one:
        checks.append(("1 client p50", f"{one.pct(50):.1f} ms", "<= 25 ms", one.pct(50) <= 25))
    if many:
        n_errors = sum(many.errors.values())
        checks += [
            ("32 clients errors", str(n_errors), "0", n_errors == 0),
            ("32 clients p99", f"{many.pct(99):.0f} ms", "<= 1000 ms", many.pct(99) <= 1000),
        ]
    if changes:
        during, served = changes
        bad = sum(v for k, v in during.errors.items())
        checks += [
            (f"during changes: {len(during.latencies_ms)} answers, errors", str(bad), "0", bad == 0),
            ("during changes: versions seen", str(len(during.versions)), ">= 2", len(during.versions) >= 2),
            ("new documents served afterwards", str(served), "True", served),
        ]
    print(f"\n{'measurement':<44} {'value':>10}  {'target':>10}  result")
    print("-" * 78)
    for name, value, target, ok in checks:
        print(f"{name:<44} {value:>10}  {target:>10}  {'PASS' if ok else 'FAIL'}")
    if args.home is None:
        shutil.rmtree(scratch / "home", ignore_errors=True)
    if args.check and not all(ok for *_, ok in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
