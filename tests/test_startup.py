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


def test_a_process_that_read_a_delta_table_exits_cleanly(tmp_path):
    """`groundwork monitor`, `status` and the serving tools read small Delta tables with delta-rs and Arrow.
    Through delta-rs's own filesystem handler such a process aborted at exit in about 4 runs of 10
    ("terminate called without an active exception", exit -6); ``delta_dataset`` reads through Arrow's."""
    import pyarrow as pa
    from deltalake import write_deltalake

    path = tmp_path / "table"
    write_deltalake(str(path), pa.table({"key": list(range(50)), "text": ["x"] * 50}))
    probe = (
        "import sys\nfrom resources.lakehouse import read_table, table_info\n"
        "rows = table_info('t', sys.argv[1]).rows\n"
        "print(rows, read_table(sys.argv[1]).num_rows)"
    )
    for _ in range(10):
        out = subprocess.run(
            [sys.executable, "-c", probe, str(path)],
            env=groundwork_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (out.returncode, out.stdout.split()) == (0, ["50", "50"]), out.stderr[-2000:]
