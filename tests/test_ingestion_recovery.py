"""Ingestion after failures: a killed run rerun exactly once, a past ingest day rebuilt by a backfill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings, run_all
from test_ingestion import CUSTOMER_HEADER, GOOD_CUSTOMERS, _customer, _run, _write

from assets.structured.assets import ingest_new_files
from assets.structured.contracts import load_sources
from resources import build_resources
from resources.lakehouse import read_table, table_version
from resources.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_killed_run_rerun_has_no_duplicates_and_loses_nothing(tmp_path, spark):
    """SIGKILL a real `groundwork run` mid-stream, run again: every file exactly once. The rerun goes
    through the same executor in this process (its Spark session is already up): what it must recover
    from, the stream's checkpoint and Delta's transaction ids, is on disk."""
    settings = make_settings(tmp_path / "home", stream_max_files_per_batch=2)
    land = Path(settings.landing_uri) / "customers"
    files = 16  # eight micro-batches of two files: killed after the third commit, five remain
    for i in range(files):
        _write(
            land / f"part-{i:03d}.csv",
            f"{CUSTOMER_HEADER}\n{_customer(f'C{6000 + i}', f'Name {i}')}\n",
        )
    env = {
        **os.environ,
        "GROUNDWORK_HOME": str(settings.home),
        "GROUNDWORK_SPARK_MASTER": "local[2]",
        "GROUNDWORK_STREAM_MAX_FILES_PER_BATCH": "2",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    command = [sys.executable, "-m", "pipelines.cli", "run", "-s", "bronze_customers"]
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bronze = f"{settings.delta_uri}/bronze_customers"
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and (table_version(bronze) or 0) < 3:
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    partial = read_table(bronze).num_rows
    assert 0 < partial < files, f"killed mid-way ({partial} of {files} files)"
    assert run_all(settings, selection=["bronze_customers"]).success
    rows = read_table(bronze).to_pandas()
    assert len(rows) == files and rows._source_file.is_unique


def test_a_past_ingest_day_is_rebuilt_from_its_files_by_a_backfill(tmp_path, spark):
    """Yesterday's delivery had a bad row; the corrected file is re-landed; a backfill of that day (the
    `dagster asset materialize --partition-range` CLI) replaces its records without duplicates."""
    settings = make_settings(tmp_path / "home")
    land = Path(settings.landing_uri) / "customers"
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    bad = _write(
        land / "delivery.csv",
        f"{CUSTOMER_HEADER}\n{GOOD_CUSTOMERS[0]}\n{_customer('C7001', 'Fixed Later', signup='bad-date')}\n",
    )
    lakehouse = build_resources(settings)["lakehouse"]
    contract = next(c for c in load_sources(settings.sources_file) if c.name == "customers")
    ingest_new_files(spark, lakehouse, contract, "yesterday-run", yesterday)  # as yesterday's run did
    bad.write_text(f"{CUSTOMER_HEADER}\n{GOOD_CUSTOMERS[0]}\n{_customer('C7001', 'Fixed Later')}\n")
    env = {
        **os.environ,
        "GROUNDWORK_HOME": str(settings.home),
        "GROUNDWORK_SPARK_MASTER": "local[2]",
        "PYTHONPATH": str(PROJECT_ROOT),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    (tmp_path / "dagster").mkdir()
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            "bronze_customers",
            "--partition-range",
            f"{yesterday}...{yesterday}",
        ],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert _run(settings).success  # today's run: nothing new lands; silver applies the rebuilt day
    bronze = read_table(lakehouse.table_path("bronze_customers")).to_pandas()
    assert len(bronze) == 2 and set(bronze._run_id) != {"yesterday-run"}
    assert {str(d) for d in bronze._ingest_date} == {yesterday}
    silver = read_table(lakehouse.table_path("silver_customers")).to_pandas()
    assert sorted(silver.customer_id) == ["C1000", "C7001"]
