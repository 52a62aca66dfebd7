"""Operator entry points, run as a user would: `groundwork`, `dagster asset materialize`, the UI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import PipelineRuns

from assets.structured.assets import current_ingest_day
from resources.lakehouse import read_table, table_version
from resources.settings import PROJECT_ROOT, SAMPLES_DIR

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "GROUNDWORK_HOME": str(home), "GROUNDWORK_SPARK_MASTER": "local[2]"}


def _products_only_home(home: Path) -> Path:
    (home / "landing").mkdir(parents=True)
    shutil.copytree(SAMPLES_DIR / "products", home / "landing" / "products")
    return home


def test_search_json_cites_sources(sample_pipeline: PipelineRuns):
    question = json.loads((SAMPLES_DIR / "gold/questions.jsonl").read_text().splitlines()[0])
    out = subprocess.run(
        [BIN / "groundwork", "search", question["query"], "-k", "3", "--json"],
        env=_env(sample_pipeline.settings.home),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    hits = json.loads(out.stdout)
    assert len(hits) == 3
    assert {h["path"] for h in hits} & set(question["relevant"])
    assert all(h["title"] and h["text"] and isinstance(h["score"], float) for h in hits)


def test_search_without_an_index_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [BIN / "groundwork", "search", "anything"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert "run `groundwork run` first" in out.stdout


def test_status_reports_every_table(sample_pipeline: PipelineRuns):
    out = subprocess.run(
        [BIN / "groundwork", "status", "--json"],
        env=_env(sample_pipeline.settings.home),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
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
    out = subprocess.run(
        [BIN / "groundwork", "run", "-s", "bronze_products", "-s", "silver_products"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout and "silver_products" in out.stdout
    assert read_table(str(home / "delta" / "silver_products")).num_rows == 40
    assert (home / "dagster" / "dagster.yaml").exists()
    assert any((home / "dagster" / "storage").iterdir()), "the run is stored in Dagster's instance"
    status = subprocess.run(
        [BIN / "groundwork", "status"], env=_env(home), capture_output=True, text=True, timeout=300
    )
    assert "last run per source" in status.stdout
    [products] = [line for line in status.stdout.splitlines() if "│ products" in line]
    counts = [cell.strip() for cell in products.split("│")[3:7]]
    assert counts == ["40", "40", "0", "0"], products  # landed, accepted, quarantined, duplicates


def test_dagster_asset_materialize_from_the_cli(tmp_path):
    home = _products_only_home(tmp_path)
    out = subprocess.run(
        [
            BIN / "dagster",
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            "bronze_products",
            "--partition",
            current_ingest_day(),
        ],
        env={**_env(home), "DAGSTER_HOME": str(home)},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert read_table(str(home / "delta" / "bronze_products")).num_rows == 40


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
        env={**_env(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster")},
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
