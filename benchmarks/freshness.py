"""Landing → searchable latency with `dagster dev` (webserver + daemon) on the embedded default.

Starts `dagster dev` on a fresh GROUNDWORK_HOME, lets the documents landing sensor start the resident
documents worker (or, with GROUNDWORK_DOCUMENTS_WORKER=false, one run per batch), drops documents into
the landing zone one at a time, and times how long each takes to be returned by a search (its path
appears in the active LanceDB table). Prints every latency, then p50 and p95. The first file (the
worker's start, cold caches, first tables) is reported apart as the warm-up.

    python -m benchmarks.freshness --files 6

With ``--topic``, the same for a Kafka topic source: a local broker (``resources/kafka.py``) and a
sources file declaring one topic source; ``topics_sensor`` starts the resident worker, then messages are
published one at a time and each is timed until its key is queryable in ``silver_bench_orders`` (read
with delta-rs, as `groundwork status` reads tables). Targets: p50 <= 10 s, p95 <= 20 s.

    python -m benchmarks.freshness --topic --files 8

With ``--documents-topic``, the same for document events: ``GROUNDWORK_DOCUMENTS_TOPIC`` set, the sample
documents published one at a time as upserts (id = their path), each timed until it is in the active
LanceDB table (produce → searchable). ``topics_sensor`` starts the resident worker on the topic's lag, as
the landing sensor does for files. Targets: p50 <= 10 s, p95 <= 20 s.

    python -m benchmarks.freshness --documents-topic --files 8
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


BENCH_SOURCE = """
sources:
  - name: bench_orders
    topic: bench.orders
    primary_key: [order_id]
    event_time: updated_at
    description: Orders published one at a time by benchmarks/freshness.py --topic.
    columns:
      - {name: order_id, type: string, required: true}
      - {name: amount, type: double, min: 0}
      - {name: updated_at, type: timestamp, required: true}
"""


def silver_keys(settings: Settings) -> set[str]:
    from resources.lakehouse import Lakehouse

    lakehouse = Lakehouse.from_settings(settings)
    if not lakehouse.exists("silver_bench_orders"):
        return set()
    return set(lakehouse.read_arrow("silver_bench_orders", ["order_id"])["order_id"].to_pylist())


def publish(bootstrap: str, key: str) -> None:
    import json
    from datetime import UTC, datetime

    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 0})
    value = {"order_id": key, "amount": 1.0, "updated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")}
    producer.produce("bench.orders", key=key.encode(), value=json.dumps(value).encode())
    if producer.flush(30):
        raise RuntimeError(f"message {key} not acknowledged")


BENCH_DOCUMENTS_TOPIC = "bench.documents"


def publish_document(bootstrap: str, source: Path) -> str:
    """Publish ``source`` as a document event keyed by its path; returns its path in the index."""
    import json

    from confluent_kafka import Producer

    from assets.documents.topics import event_path

    doc_id = source.relative_to(SAMPLES_DIR / "documents").as_posix()
    event = {"id": doc_id, "text": source.read_text(encoding="utf-8"), "media_type": "text/markdown"}
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 0})
    producer.produce(BENCH_DOCUMENTS_TOPIC, key=doc_id.encode(), value=json.dumps(event).encode())
    if producer.flush(30):
        raise RuntimeError(f"document {doc_id} not acknowledged")
    return event_path(BENCH_DOCUMENTS_TOPIC, doc_id)


def wait_until(found, what: str, started: float, timeout: float, log_name: str, poll: float) -> float:
    """Seconds from ``started`` until ``found()`` holds (polled every ``poll`` s)."""
    while not found():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} after {timeout:.0f}s; see {log_name}")
        time.sleep(poll)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=6, help="documents to drop, one at a time")
    parser.add_argument("--port", type=int, default=3457)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for one file")
    parser.add_argument("--topic", action="store_true", help="a Kafka topic source instead of files")
    parser.add_argument(
        "--documents-topic", action="store_true", help="document events on a topic instead of files"
    )
    args = parser.parse_args()
    topic = args.topic or args.documents_topic

    home = Path(tempfile.mkdtemp(prefix="groundwork-freshness-"))
    env = {**os.environ, "GROUNDWORK_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1"}
    broker = None
    if topic:
        from resources.kafka import LocalBroker

        broker = LocalBroker(home / "kafka", Settings(home=home).spark_jars_dir).start()
        env["GROUNDWORK_KAFKA_BOOTSTRAP"] = broker.bootstrap
    if args.topic:
        (home / "sources.yaml").write_text(BENCH_SOURCE)
        env["GROUNDWORK_SOURCES_FILE"] = str(home / "sources.yaml")
    if args.documents_topic:
        env["GROUNDWORK_DOCUMENTS_TOPIC"] = BENCH_DOCUMENTS_TOPIC
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
        what = "publishing" if topic else "dropping"
        print(f"dagster dev up; GROUNDWORK_HOME={home}; {what} {args.files} one at a time", flush=True)
        for i in range(args.files if args.topic else 0):
            key = f"order-{i:03}"
            published = time.monotonic()
            publish(broker.bootstrap, key)
            seconds = wait_until(
                lambda key=key: key in silver_keys(settings),
                f"{key} not in silver",
                published,
                args.timeout,
                log.name,
                0.25,
            )
            latencies.append((key, seconds))
            print(f"  {key}: queryable in silver after {seconds:.1f}s", flush=True)
        for source in DOCUMENTS[: args.files if args.documents_topic else 0]:
            published = time.monotonic()
            path = publish_document(broker.bootstrap, source)
            seconds = wait_until(
                lambda path=path: path in indexed_paths(settings),
                f"{path} not searchable",
                published,
                args.timeout,
                log.name,
                0.5,
            )
            latencies.append((path, seconds))
            print(f"  {path}: searchable after {seconds:.1f}s", flush=True)
        for source in DOCUMENTS[: 0 if topic else args.files]:
            target = landing / source.relative_to(SAMPLES_DIR / "documents")
            target.parent.mkdir(parents=True, exist_ok=True)
            relative = target.relative_to(landing).as_posix()
            tmp = target.with_name("_" + target.name)  # land atomically: written, then renamed
            shutil.copyfile(source, tmp)
            landed = time.monotonic()
            tmp.rename(target)
            seconds = wait_until(
                lambda relative=relative: relative in indexed_paths(settings),
                f"{relative} not searchable",
                landed,
                args.timeout,
                log.name,
                0.5,
            )
            latencies.append((relative, seconds))
            print(f"  {relative}: searchable after {seconds:.1f}s", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a worker run mid-batch can hold dagster dev's shutdown up
            print("dagster dev still running 60 s after SIGTERM: killing its process group", flush=True)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=60)
        log.close()
        if broker is not None:
            broker.stop()
    warm = [seconds for _, seconds in latencies[1:]]
    unit = "message" if topic else "file"
    print(f"warm-up (first {unit}, cold start): {latencies[0][1]:.1f}s")
    if warm:
        p50 = statistics.median(warm)
        p95 = statistics.quantiles(warm, n=20, method="inclusive")[-1] if len(warm) > 1 else warm[0]
        path = {True: "produce → queryable in silver", False: "landing → searchable"}[args.topic]
        if args.documents_topic:
            path = "produce → searchable"
        print(f"{path} over {len(warm)} {unit}s: p50 {p50:.1f}s, p95 {p95:.1f}s")
        # Issue 19: p50 <= 10 s and p95 <= 20 s for a topic (and the aim for files).
        met = p50 <= 10 and p95 <= 20
        print(f"target p50 <= 10s, p95 <= 20s: {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
