"""Start-up: each read-only CLI command imports only what it uses (no Dagster, no Spark; MLflow only where
a registry lookup is needed), run in a fresh process as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import PipelineRuns

from resources.settings import PROJECT_ROOT, SAMPLES_DIR

pytestmark = pytest.mark.slow

# Runs the `groundwork` command in this process and, at exit, reports which of the watched packages it
# imported (atexit runs after typer's SystemExit and after uvicorn's graceful shutdown on SIGINT).
WATCHED = ["dagster", "pyspark", "mlflow", "great_expectations"]
RUNNER = f"""
import atexit, json, sys
def report():
    loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({WATCHED!r}))
    print("IMPORTED=" + json.dumps(loaded), file=sys.stderr, flush=True)
atexit.register(report)
from pipelines.cli import app
sys.argv = ["groundwork", *sys.argv[1:]]
app()
"""


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "GROUNDWORK_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}


def _imported(stderr: str) -> set[str]:
    [line] = [line for line in stderr.splitlines() if line.startswith("IMPORTED=")]
    return set(json.loads(line.removeprefix("IMPORTED=")))


def _groundwork(home: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        env=_env(home),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out, _imported(out.stderr)


@pytest.mark.parametrize(
    ("args", "needs_registry"),
    [
        (["search", "How many days do I have to return an item?", "--json"], True),
        (["eval", "--gold", str(SAMPLES_DIR / "gold" / "questions.jsonl"), "--json"], True),
        (["status", "--json"], False),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else str(value),
)
def test_read_commands_import_neither_dagster_nor_spark(sample_pipeline: PipelineRuns, args, needs_registry):
    out, imported = _groundwork(sample_pipeline.settings.home, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) if "--json" in args else out.stdout.strip()  # it did its work
    assert not imported & {"dagster", "pyspark", "great_expectations"}, imported
    if not needs_registry:
        assert "mlflow" not in imported


def test_keys_commands_import_no_engine(tmp_path):
    created, imported = _groundwork(
        tmp_path, "keys", "create", "--name", "lean", "--groups", "public", "--quiet"
    )
    assert created.returncode == 0 and created.stdout.strip(), created.stderr[-3000:]
    assert not imported & set(WATCHED), imported
    listed, imported = _groundwork(tmp_path, "keys", "list", "--json")
    assert [key["name"] for key in json.loads(listed.stdout)] == ["lean"]
    assert not imported & set(WATCHED), imported


def test_run_imports_dagster_and_spark(tmp_path):
    """The check above can fail: the pipeline command does import both."""
    out, imported = _groundwork(tmp_path, "run", "--select", "no_such_asset")
    assert {"dagster"} <= imported, out.stderr[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_imports_neither_dagster_nor_spark(sample_pipeline: PipelineRuns):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "serve", "--port", str(port), "--log-level", "warning"],
        env=_env(sample_pipeline.settings.home),
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    health = json.loads(response.read())
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer /health"
                time.sleep(0.2)
        assert health["status"] == "ok", health
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully; atexit then reports
        _, stderr = server.communicate(timeout=60)
    imported = _imported(stderr)
    assert not imported & {"dagster", "pyspark", "great_expectations"}, imported


def test_spark_python_workers_import_no_orchestration():
    """The functions Spark ships to its Python workers (parsers, the chunker) live in plain modules: a
    worker that imported an asset module would import Dagster, about 3 s per worker on two cores."""
    modules = ["assets.chunks.transform", "assets.documents.transform", "assets.structured.transform"]
    probe = (
        f"import json, sys\nfor m in {modules!r}: __import__(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=_env(Path("/nonexistent")), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    imported = set(json.loads(out.stdout))
    assert "pyspark" in imported, "the probe imported the transforms"
    assert not imported & {"dagster", "mlflow", "great_expectations", "torch"}, imported
