"""Start-up: each CLI command imports only what it uses (no Dagster, no Spark; MLflow only where a registry
lookup is needed), run in a fresh process as a user runs it.

Every test that runs a `groundwork` command in a subprocess checks its imports through
``conftest.run_groundwork``: `search` and `status` in tests/test_cli.py (and `run`, which must import both:
the check can fail), `eval` in tests/test_registry.py, `serve` in tests/test_serving.py; `keys` here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import WATCHED_PACKAGES, groundwork_env, run_groundwork


def test_keys_commands_import_no_engine(tmp_path):
    created, imported = run_groundwork(
        tmp_path, "keys", "create", "--name", "lean", "--groups", "public", "--quiet"
    )
    assert created.stdout.strip()
    assert not imported & set(WATCHED_PACKAGES), imported
    listed, imported = run_groundwork(tmp_path, "keys", "list", "--json")
    assert [key["name"] for key in json.loads(listed.stdout)] == ["lean"]
    assert not imported & set(WATCHED_PACKAGES), imported


def test_spark_python_workers_import_no_orchestration():
    """The functions Spark ships to its Python workers (parsers, the chunker) live in plain modules: a
    worker that imported an asset module would import Dagster, about 3 s per worker on two cores."""
    modules = ["assets.chunks.transform", "assets.documents.transform", "assets.structured.transform"]
    probe = (
        f"import json, sys\nfor m in {modules!r}: __import__(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=groundwork_env(Path("/nonexistent")),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    imported = set(json.loads(out.stdout))
    assert "pyspark" in imported, "the probe imported the transforms"
    assert not imported & {"dagster", "mlflow", "great_expectations", "torch"}, imported
