"""Landing → searchable latency with `dagster dev` (webserver + daemon) on the embedded default.

Starts `dagster dev` on a fresh GROUNDWORK_HOME, lets the documents landing sensor start the resident
documents worker (or, with GROUNDWORK_DOCUMENTS_WORKER=false, one run per batch), drops documents into
the landing zone one at a time, and times how long each takes to be returned by a search (its path
appears in the active LanceDB table). Prints every latency, then p50 and p95. The first file (the
worker's start, cold caches, first tables) is reported apart as the warm-up.

    python -m benchmarks.freshness --files 6
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from resources.settings import PROJECT_ROOT, SAMPLES_DIR, Settings

DOCUMENTS = sorted(
    p
    for p in (SAMPLES_DIR / "documents").rglob("*.md")
    if p.is_file() and not p.name.startswith("_") and "copy" not in p.name
)


def indexed_paths(settings: Settings) -> set[str]:
    import lancedb

    from resources.lancedb.tables import open_active

    table = open_active(lancedb.connect(settings.lancedb_uri), settings.embeddings_table)
    if table is None:
        return set()
    return set(table.search().select(["path"]).limit(None).to_arrow()["path"].to_pylist())


def wait_for_webserver(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError("dagster dev did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=6, help="documents to drop, one at a time")
    parser.add_argument("--port", type=int, default=3457)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for one file")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="groundwork-freshness-"))
    env = {**os.environ, "GROUNDWORK_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1"}
    os.environ.update(env)
    settings = Settings()
    from pipelines.cli import ensure_dagster_home

    env["DAGSTER_HOME"] = str(ensure_dagster_home(settings))
    landing = Path(settings.documents_landing)
    landing.mkdir(parents=True)
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml")]
    command += ["-h", "127.0.0.1", "-p", str(args.port)]
    log = open(home / "dagster-dev.log", "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen(
        command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=log, start_new_session=True
    )
    latencies: list[tuple[str, float]] = []
    try:
        wait_for_webserver(args.port, 180)
        print(f"dagster dev up; GROUNDWORK_HOME={home}; dropping {args.files} files", flush=True)
        for source in DOCUMENTS[: args.files]:
            target = landing / source.relative_to(SAMPLES_DIR / "documents")
            target.parent.mkdir(parents=True, exist_ok=True)
            relative = target.relative_to(landing).as_posix()
            tmp = target.with_name("_" + target.name)  # land atomically: written, then renamed
            shutil.copyfile(source, tmp)
            landed = time.monotonic()
            tmp.rename(target)
            while relative not in indexed_paths(settings):
                if time.monotonic() - landed > args.timeout:
                    raise TimeoutError(f"{relative} not searchable after {args.timeout:.0f}s; see {log.name}")
                time.sleep(0.5)
            latencies.append((relative, time.monotonic() - landed))
            print(f"  {relative}: searchable after {latencies[-1][1]:.1f}s", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    warm = [seconds for _, seconds in latencies[1:]]
    print(f"warm-up (first file, cold start): {latencies[0][1]:.1f}s")
    if warm:
        p95 = statistics.quantiles(warm, n=20, method="inclusive")[-1] if len(warm) > 1 else warm[0]
        print(
            f"landing → searchable over {len(warm)} files: p50 {statistics.median(warm):.1f}s, p95 {p95:.1f}s"
        )
        print(f"target p50 <= 30s: {'met' if statistics.median(warm) <= 30 else 'MISSED'}")


if __name__ == "__main__":
    main()
