"""Maintenance on the real engines: Delta OPTIMIZE + VACUUM, LanceDB compaction and version cleanup."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa

from assets.embeddings.index import embeddings_schema, model_table_name
from pipelines.maintenance import (
    RETENTION_CHECK,
    delta_tables,
    maintain_delta,
    maintain_lancedb,
    optimize_and_vacuum,
)
from resources.lakehouse import read_table


def _parquet_files(path: Path) -> set[str]:
    return {p.name for p in path.glob("*.parquet")}


def _small_appends(spark, path: Path, batches: int = 4) -> None:
    for i in range(batches):
        spark.range(i * 10, (i + 1) * 10).selectExpr("id", "cast(id as string) as name").coalesce(
            1
        ).write.format("delta").mode("append").save(str(path))


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
