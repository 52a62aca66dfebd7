"""Maintenance on the real engines: Delta OPTIMIZE + VACUUM, LanceDB compaction and version cleanup;
the nightly validation and maintenance jobs through Dagster over a small real pipeline.
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from conftest import make_settings, run_documents, run_main_job
from dagster import DagsterEventType, DagsterInstance, DefaultScheduleStatus
from deltalake import DeltaTable

from pipelines.definitions import build_definitions
from pipelines.jobs import MAINTENANCE_JOB, VALIDATION_JOB
from pipelines.maintenance import (
    RETENTION_CHECK,
    delta_tables,
    maintain_delta,
    maintain_lancedb,
    optimize_and_vacuum,
)
from quality.checks import quality_checks
from resources.lakehouse import read_table, table_version
from resources.lancedb.tables import embeddings_schema, model_table_name, open_active
from resources.settings import SAMPLES_DIR


def _parquet_files(path: Path) -> set[str]:
    return {p.name for p in path.glob("*.parquet")}


def _small_appends(spark, path: Path, batches: int = 4) -> None:
    for i in range(batches):
        batch = spark.range(i * 10, (i + 1) * 10).selectExpr("id", "cast(id as string) as name")
        batch.coalesce(1).write.format("delta").mode("append").save(str(path))


def test_optimize_and_vacuum_compacts_and_deletes_old_files(spark, tmp_path, caplog):
    path = tmp_path / "delta" / "events"
    _small_appends(spark, path)
    before_rows = sorted(read_table(str(path)).to_pylist(), key=lambda r: r["id"])
    files_before = _parquet_files(path)
    assert len(files_before) == 4

    with caplog.at_level(logging.WARNING, logger="pipelines.maintenance"):
        result = optimize_and_vacuum(spark, str(path), retain_hours=0)

    assert (result.files_before, result.files_after) == (4, 1)
    files_after = _parquet_files(path)
    assert len(files_after) == 1 and not files_after & files_before  # old files gone from storage
    assert result.files_vacuumed == 4
    operations = [r["operation"] for r in spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()]
    assert "OPTIMIZE" in operations and "VACUUM END" in operations
    assert sorted(read_table(str(path)).to_pylist(), key=lambda r: r["id"]) == before_rows
    # The short retention was allowed explicitly, logged, and the safety check restored afterwards.
    assert any(RETENTION_CHECK in r.getMessage() for r in caplog.records)
    assert spark.conf.get(RETENTION_CHECK) == "true"


def test_default_retention_keeps_recent_files(spark, tmp_path):
    path = tmp_path / "delta" / "recent"
    _small_appends(spark, path, batches=2)
    result = optimize_and_vacuum(spark, str(path), retain_hours=168)
    assert result.files_after == 1
    assert result.files_vacuumed == 0  # compacted-away files are younger than a week: kept for time travel
    assert len(_parquet_files(path)) == 3


def test_maintain_delta_finds_every_table(spark, tmp_path):
    root = tmp_path / "delta"
    _small_appends(spark, root / "a", 2)
    _small_appends(spark, root / "b", 3)
    (root / "not_a_table").mkdir()
    assert delta_tables(str(root)) == ["a", "b"]
    results = {r.table: r for r in maintain_delta(spark, str(root), retain_hours=0)}
    assert results["a"].files_after == 1 and results["b"].files_after == 1


def test_maintain_lancedb_cleans_old_versions_and_keeps_data(tmp_path):
    db = lancedb.connect(str(tmp_path / "lancedb"))
    name = model_table_name("chunk_embeddings", "test-model@1")
    table = db.create_table(name, schema=embeddings_schema(4, "test-model@1"))
    rng = np.random.default_rng(0)
    for batch in range(5):
        ids = [f"c{batch}-{i}" for i in range(3)]
        vectors = rng.normal(size=(3, 4)).astype("float32")
        table.add(
            pa.table(
                {
                    "chunk_id": ids,
                    "text": [f"text {c}" for c in ids],
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 4),
                }
            ).cast(pa.schema([table.schema.field(c) for c in ("chunk_id", "text", "vector")])),
        )
    before = table.to_arrow().sort_by("chunk_id")
    versions_before = len(table.list_versions())
    assert versions_before >= 6

    results = {
        r.table: r for r in maintain_lancedb(db, vector_index_min_rows=10_000, keep_versions=timedelta(0))
    }

    table = db.open_table(name)
    assert results[name].versions_before == versions_before
    assert results[name].versions_after < versions_before
    assert len(table.list_versions()) == results[name].versions_after
    assert table.to_arrow().sort_by("chunk_id").equals(before)
    assert {"FTS", "INVERTED"} & {str(i.index_type).upper() for i in table.list_indices()}
    assert table.search("text", query_type="fts").limit(1).to_list()


# --- the Dagster jobs over a real (small) pipeline: nightly validation and maintenance ---------------


@pytest.fixture(scope="module")
def small_pipeline(tmp_path_factory, spark):
    """Three documents through the main job, then one of them changed through the documents' chain again
    (so the gold table and the index have several versions and files)."""
    settings = make_settings(tmp_path_factory.mktemp("maint") / "home", delta_vacuum_retain_hours=0)
    docs = Path(settings.documents_landing)
    for relative in ["policies/return-policy.md", "policies/shipping-policy.md", "faq/gift-cards.md"]:
        (docs / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLES_DIR / "documents" / relative, docs / relative)
    with DagsterInstance.ephemeral() as instance:  # as `groundwork run` runs: steps side by side
        assert run_main_job(settings, instance).success
    (docs / "faq/gift-cards.md").write_text("# Gift cards\n\nGift cards never expire and work online.\n")
    assert run_documents(settings).success
    return settings


def _check_results(result) -> dict[str, bool]:
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
    }


def _run(settings, job_name: str, raise_on_error: bool = True):
    job = build_definitions(settings).resolve_job_def(job_name)
    return job.execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=raise_on_error)


def test_nightly_validation_checks_every_table_without_rebuilding(small_pipeline):
    gold_version = table_version(f"{small_pipeline.delta_uri}/document_chunks")
    result = _run(small_pipeline, VALIDATION_JOB)
    assert result.success
    checks = _check_results(result)
    assert len(checks) == len(quality_checks(small_pipeline.sources_file))  # every blocking check ran
    assert checks["document_chunks_expectations"] and checks["chunk_embeddings_expectations"]
    assert not result.get_asset_materialization_events()
    assert table_version(f"{small_pipeline.delta_uri}/document_chunks") == gold_version


def test_maintenance_job_compacts_vacuums_and_keeps_data(small_pipeline):
    delta = Path(small_pipeline.delta_uri)
    gold = delta / "document_chunks"
    rows_before = {t: read_table(str(delta / t)).num_rows for t in delta_tables(str(delta))}
    gold_files_before = _parquet_files(gold)
    db = lancedb.connect(small_pipeline.lancedb_uri)
    index = open_active(db, small_pipeline.embeddings_table)
    vectors_before = index.to_arrow().sort_by("chunk_id")
    versions_before = len(index.list_versions())

    # The runs kept a week of LanceDB versions (the default); maintenance is told to keep none.
    result = _run(small_pipeline.model_copy(update={"lancedb_keep_versions_days": 0}), MAINTENANCE_JOB)

    assert result.success
    assert len(_parquet_files(gold)) < len(gold_files_before)  # MERGE left old files; VACUUM took them
    assert {"VACUUM START", "VACUUM END"} <= {h["operation"] for h in DeltaTable(str(gold)).history()}
    # quality_results gets one small append per check: OPTIMIZE compacts it to one file.
    results = DeltaTable(str(delta / "quality_results"))
    assert "OPTIMIZE" in {h["operation"] for h in results.history()}
    assert len(results.file_uris()) == 1
    assert {t: read_table(str(delta / t)).num_rows for t in rows_before} == rows_before
    index = open_active(lancedb.connect(small_pipeline.lancedb_uri), small_pipeline.embeddings_table)
    assert len(index.list_versions()) < versions_before
    assert index.to_arrow().sort_by("chunk_id").equals(vectors_before)
    # The tables still pass their suites after maintenance.
    assert all(_check_results(_run(small_pipeline, VALIDATION_JOB)).values())


def test_nightly_validation_fails_on_a_bad_current_table(small_pipeline, spark):
    """A duplicate chunk id written behind the pipeline's back is caught by the next nightly validation."""
    gold = f"{small_pipeline.delta_uri}/document_chunks"
    spark.read.format("delta").load(gold).limit(1).write.format("delta").mode("append").save(gold)
    result = _run(small_pipeline, VALIDATION_JOB, raise_on_error=False)
    checks = _check_results(result)
    assert not result.success
    assert checks["document_chunks_expectations"] is False
    assert checks["silver_documents_expectations"] is True


def test_schedules_point_at_the_jobs():
    defs = build_definitions(make_settings(Path("/tmp/unused-home")))
    schedules = {s.name: s for s in defs.schedules}
    assert schedules["nightly_validation"].job_name == VALIDATION_JOB
    assert schedules["nightly_maintenance"].job_name == MAINTENANCE_JOB
    assert schedules["nightly_maintenance"].default_status == DefaultScheduleStatus.RUNNING
