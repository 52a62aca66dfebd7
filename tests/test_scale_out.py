"""Scale-out on loopback: the same pipeline on a Spark standalone cluster, and on S3 object storage.

Each pipeline runs in a subprocess (`python -m pipelines.cli run`), because this test process already
holds a local SparkSession and Spark allows one per process. Select these alone with `-m scale_out`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyspark
import pytest

from resources.lakehouse import read_table, table_version
from resources.settings import PROJECT_ROOT, SAMPLES_DIR, Settings
from serving.audit import read_audit

pytestmark = [pytest.mark.scale_out, pytest.mark.slow]
DOCUMENTS = ["policies/return-policy.md", "faq/gift-cards.md"]
SPARK_HOME = Path(pyspark.__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, timeout: float = 120) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _base_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDWORK_")}
    return env | {
        "GROUNDWORK_HOME": str(home),
        "GROUNDWORK_SPARK_JARS_DIR": os.environ.get(
            "GROUNDWORK_SPARK_JARS_DIR", str(Path.home() / ".cache/groundwork/jars")
        ),
        "GROUNDWORK_SPARK_DRIVER_MEMORY": "1g",
        "GROUNDWORK_SPARK_SHUFFLE_PARTITIONS": "2",
        "PYTHONPATH": str(PROJECT_ROOT),
        "HF_HUB_OFFLINE": "1",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "COLUMNS": "200",
        **extra,
    }


def _groundwork(env: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, (
        f"groundwork {' '.join(args)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    )
    return out


def _landing_files() -> dict[str, Path]:
    """A small landing set: two documents and one structured source (relative key → sample file)."""
    files = {f"documents/{d}": SAMPLES_DIR / "documents" / d for d in DOCUMENTS}
    files["customers/customers.csv"] = SAMPLES_DIR / "customers" / "customers.csv"
    return files


def _spark_daemon(cls: str, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A Spark standalone daemon (Master or Worker) straight from the pip package's jars."""
    command = ["java", "-Xmx512m", "-cp", f"{SPARK_HOME}/jars/*", f"org.apache.spark.deploy.{cls}", *args]
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


@pytest.fixture
def standalone_cluster(tmp_path) -> Iterator[tuple[str, str, Path]]:
    """A master and one worker (1 core, 1 GiB) on 127.0.0.1; yields the master URL, its UI and work dir."""
    # The pip package has no RELEASE file, so Spark's launcher (which builds each executor's command)
    # looks for a source build's directories to learn the Scala version unless it is told.
    env = os.environ | {
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_SCALA_VERSION": "2.13",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
    }
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    work = tmp_path / "spark-work"
    master = _spark_daemon(
        "master.Master",
        ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
        tmp_path / "master.log",
        env,
    )
    url, ui_url = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}"
    worker = None
    try:
        _wait_for(f"{ui_url}/json/")
        worker = _spark_daemon(
            "worker.Worker",
            [
                *("--host", "127.0.0.1", "--webui-port", str(worker_ui), "--cores", "1", "--memory", "1g"),
                "--work-dir",
                str(work),
                url,
            ],
            tmp_path / "worker.log",
            env,
        )
        deadline = time.monotonic() + 120
        while not json.loads(_wait_for(f"{ui_url}/json/"))["aliveworkers"]:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url, ui_url, work
    finally:
        for process in (worker, master):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def test_ingestion_runs_on_a_standalone_cluster(tmp_path, standalone_cluster):
    master_url, master_ui, work_dir = standalone_cluster
    home = tmp_path / "home"
    for key, source in _landing_files().items():
        (home / "landing" / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, home / "landing" / key)
    env = _base_env(home, GROUNDWORK_SPARK_MASTER=master_url)

    assets = ["bronze_documents", "silver_documents", "document_chunks"]
    assets += ["bronze_customers", "silver_customers"]
    _groundwork(env, "run", *(arg for name in assets for arg in ("-s", name)))

    delta = home / "delta"
    assert sorted(read_table(str(delta / "silver_documents"), ["path"])["path"].to_pylist()) == sorted(
        DOCUMENTS
    )
    chunks = read_table(str(delta / "document_chunks"), ["path", "token_count"])
    assert set(chunks["path"].to_pylist()) == set(DOCUMENTS)
    customers = read_table(str(delta / "silver_customers"), ["customer_id"])
    assert customers.num_rows > 0
    # The work ran on the cluster: the master saw the application and the worker ran its executors,
    # whose Python workers chunked the documents (they import this checkout through executorEnv).
    state = json.loads(_wait_for(f"{master_ui}/json/"))
    apps = state["activeapps"] + state["completedapps"]
    assert [a["name"] for a in apps] == ["groundwork"]
    executor_logs = list(work_dir.glob("app-*/*/stderr"))
    assert executor_logs, "no executor ran on the worker"


@pytest.fixture
def s3_endpoint(tmp_path) -> Iterator[str]:
    """moto's S3 server on loopback, with a bucket; credentials are dummies, read from the environment."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=(tmp_path / "moto.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        _wait_for(f"{endpoint}/moto-api/", timeout=60)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "groundwork-test", "AWS_SECRET_ACCESS_KEY": "groundwork-test-secret"}


def test_pipeline_on_s3_object_storage(tmp_path, s3_endpoint, monkeypatch):
    import boto3
    import lancedb

    from resources.lancedb.tables import open_active

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **_boto_keys())
    s3.create_bucket(Bucket="groundwork")
    for key, source in _landing_files().items():
        s3.upload_file(str(source), "groundwork", f"landing/{key}")
    locations = {
        "GROUNDWORK_LANDING_URI": "s3a://groundwork/landing",
        "GROUNDWORK_DELTA_URI": "s3a://groundwork/delta",
        "GROUNDWORK_CHECKPOINT_URI": "s3a://groundwork/checkpoints",
        "GROUNDWORK_LANCEDB_URI": "s3://groundwork/lancedb",
        "GROUNDWORK_S3_ENDPOINT_URL": s3_endpoint,
    }
    home = tmp_path / "home"
    env = _base_env(home, GROUNDWORK_SPARK_MASTER="local[2]", **locations, **S3_CREDENTIALS)

    run = _groundwork(env, "run")
    assert "succeeded" in run.stdout
    assert S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in run.stdout + run.stderr

    # Everything landed in the bucket, nothing in the local home's data folders.
    keys = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="groundwork")
        for o in page.get("Contents", [])
    }
    for table in ("bronze_documents", "silver_documents", "document_chunks", "silver_customers"):
        assert any(k.startswith(f"delta/{table}/_delta_log/") for k in keys), table
    assert any(k.startswith("lancedb/") for k in keys)
    assert not (home / "delta").exists() and not (home / "lancedb").exists()

    for name, value in {**locations, **S3_CREDENTIALS, "GROUNDWORK_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    chunks = read_table(
        f"{settings.delta_uri}/document_chunks", ["chunk_id", "path"], settings.object_store_options()
    )
    assert set(chunks["path"].to_pylist()) == set(DOCUMENTS)
    db = lancedb.connect(settings.lancedb_uri, storage_options=settings.object_store_options())
    index = open_active(db, settings.embeddings_table)
    assert index.count_rows() == chunks.num_rows

    search = _groundwork(env, "search", "How many days do I have to return an item?", "-k", "1", "--json")
    (hit,) = json.loads(search.stdout)
    assert hit["path"] == "policies/return-policy.md"
    status = _groundwork(env, "status", "--json")
    rows = {t["name"].split(" ")[0]: t["rows"] for t in json.loads(status.stdout)["tables"]}
    assert rows["document_chunks"] == chunks.num_rows and rows["silver_customers"] > 0

    # `groundwork serve` answers from the bucket's index and writes its audit log to the bucket.
    serve_env = env | {"GROUNDWORK_AUDIT_FLUSH_SECONDS": "0.2"}
    key = _groundwork(serve_env, "keys", "create", "--name", "s3", "--groups", "public", "--quiet")
    with _serve(serve_env, tmp_path / "serve.log") as url:
        response = urllib.request.urlopen(
            urllib.request.Request(
                f"{url}/search",
                data=json.dumps({"query": "How many days do I have to return an item?", "k": 2}).encode(),
                headers={"X-API-Key": key.stdout.strip(), "Content-Type": "application/json"},
            ),
            timeout=60,
        )
        found = json.loads(response.read())
    options = settings.object_store_options()
    gold = f"{settings.delta_uri}/document_chunks"
    titles = {r["path"]: r["title"] for r in read_table(gold, ["path", "title"], options).to_pylist()}
    gold_version = table_version(gold, options)
    assert found["hits"] and found["hits"][0]["path"] == "policies/return-policy.md"
    for cited in found["hits"]:
        assert cited["title"] == titles[cited["path"]]
        assert cited["delta_version"] == gold_version and cited["table_name"] == found["table_name"]
    assert settings.audit_uri.startswith("s3a://groundwork/")
    audit = read_audit(settings.audit_uri, options).to_pylist()
    (record,) = [r for r in audit if r["request_id"] == found["request_id"]]
    assert record["caller"] == "s3" and record["endpoint"] == "POST /search" and record["status"] == 200
    assert record["chunk_ids"] == [h["chunk_id"] for h in found["hits"]]
    audit_keys = s3.list_objects_v2(Bucket="groundwork", Prefix="delta/serving_audit/_delta_log/")
    assert audit_keys.get("KeyCount", 0) > 0 and not (home / "delta").exists()  # in the bucket, not at home
    assert S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in (tmp_path / "serve.log").read_text()


@contextmanager
def _serve(env: dict[str, str], log: Path) -> Iterator[str]:
    """`groundwork serve` on a free loopback port until the block ends, then stopped as Ctrl-C stops it
    (uvicorn's graceful shutdown flushes the audit log)."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            health = json.loads(_wait_for(f"http://127.0.0.1:{port}/health", timeout=300))
        except OSError as exc:
            raise AssertionError(f"serve did not answer: {exc}\n{log.read_text()[-4000:]}") from None
        assert health["status"] == "ok", health
        yield f"http://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise


def _boto_keys() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }
