"""Operator entry points, run as a user would: `groundwork`, the UI. Each `groundwork` subprocess also
reports what it imported (the read commands import no engine). `dagster asset materialize` is run by the
backfill test (tests/test_ingestion_recovery.py), with a partition range."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ENGINES, PipelineRuns, groundwork_env, run_groundwork

from resources.lakehouse import read_table, table_version
from resources.settings import PROJECT_ROOT, SAMPLES_DIR

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _products_only_home(home: Path) -> Path:
    (home / "landing").mkdir(parents=True)
    shutil.copytree(SAMPLES_DIR / "products", home / "landing" / "products")
    return home


def test_search_json_cites_sources(sample_pipeline: PipelineRuns):
    question = json.loads((SAMPLES_DIR / "gold/questions.jsonl").read_text().splitlines()[0])
    out, imported = run_groundwork(
        sample_pipeline.settings.home, "search", question["query"], "-k", "3", "--json"
    )
    hits = json.loads(out.stdout)
    assert len(hits) == 3
    assert {h["path"] for h in hits} & set(question["relevant"])
    assert all(h["title"] and h["text"] and isinstance(h["score"], float) for h in hits)
    assert not imported & ENGINES, imported  # MLflow only: the champion's alias names the model


def test_search_without_an_index_is_a_clear_error(tmp_path):
    out, imported = run_groundwork(tmp_path, "search", "anything", check=False)
    assert out.returncode == 2
    assert "run `groundwork run` first" in out.stdout
    assert not imported & ENGINES, imported


def test_status_reports_every_table(sample_pipeline: PipelineRuns):
    out, imported = run_groundwork(sample_pipeline.settings.home, "status", "--json")
    assert not imported & {*ENGINES, "mlflow"}, imported
    report = json.loads(out.stdout)
    tables = {t["name"]: t for t in report["tables"]}
    [embeddings] = [t for t in report["tables"] if t["engine"] == "lancedb"]
    assert (
        embeddings["name"]
        == f"chunk_embeddings → {sample_pipeline.second['chunk_embeddings']['lancedb_table']}"
    )
    assert embeddings["rows"] == sample_pipeline.second["chunk_embeddings"]["dagster/row_count"]
    assert tables["silver_customers"]["rows"] == 60
    assert tables["silver_documents"]["version"] == table_version(
        sample_pipeline.first["silver_documents"]["table_path"]
    )
    assert {q["source"] for q in report["quarantine"]} >= {"documents", "customers", "transactions"}
    assert {q["layer"] for q in report["quarantine"]} == {"bronze", "silver"}
    assert {r["source"] for r in report["ingestion"]} >= {"documents", "customers", "products"}


def test_groundwork_run_records_the_run_in_dagster(tmp_path):
    home = _products_only_home(tmp_path)
    out, imported = run_groundwork(home, "run", "-s", "bronze_products", "-s", "silver_products")
    assert {"dagster", "pyspark"} <= imported  # the import checks of the read commands can fail
    assert "torch" not in imported  # nothing selected embeds: the background start-up leaves torch alone
    assert "succeeded" in out.stdout and "silver_products" in out.stdout
    assert read_table(str(home / "delta" / "silver_products")).num_rows == 40
    assert (home / "dagster" / "dagster.yaml").exists()
    assert any((home / "dagster" / "storage").iterdir()), "the run is stored in Dagster's instance"
    status, _ = run_groundwork(home, "status")
    assert "last run per source" in status.stdout
    [products] = [line for line in status.stdout.splitlines() if "│ products" in line]
    counts = [cell.strip() for cell in products.split("│")[3:7]]
    assert counts == ["40", "40", "0", "0"], products  # landed, accepted, quarantined, duplicates


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dagster_ui_lists_the_assets(tmp_path):
    port = _free_port()
    (tmp_path / "dagster").mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster" / "dagster.yaml")
    server = subprocess.Popen(
        [BIN / "dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT,
        env=groundwork_env(tmp_path, DAGSTER_HOME=str(tmp_path / "dagster")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        query = json.dumps({"query": "{ assetNodes { assetKey { path } groupName } }"}).encode()
        nodes = None
        while time.monotonic() < deadline and nodes is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=query,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    nodes = json.loads(response.read())["data"]["assetNodes"]
            except (OSError, KeyError, TypeError):
                time.sleep(1)
        assert nodes is not None, "dagster-webserver did not answer within 120 s"
        groups = {n["assetKey"]["path"][-1]: n["groupName"] for n in nodes}
        assert groups["bronze_documents"] == "bronze"
        assert groups["silver_customers"] == "silver"
        assert groups["document_chunks"] == "gold"
        assert groups["chunk_embeddings"] == "embeddings"
    finally:
        server.terminate()
        server.wait(timeout=30)
