"""Keep a model's LanceDB table exactly in step with the gold chunks, embedding only what changed.

A chunk is embedded when its (chunk id, content hash) is not yet in the table for this model; rows
whose chunk left the gold table are deleted. A new model's table is built beside the current one and
becomes active only when complete and validated; the old one stays for rollback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import FTS, IvfHnswSq, LabelList

from models.embedding_model import embedding_input
from resources.lancedb.tables import (
    INDEXED_COLUMNS,
    OPTIONAL_INDEXED_COLUMNS,
    activate,
    active_table_name,
    model_table_name,
    open_or_create,
    with_citations,
)


class CandidateRejectedError(ValueError):
    """A new model's table was built but failed validation; serving stays on the current table."""


@dataclass(frozen=True)
class SyncPlan:
    to_embed: pa.Table
    to_delete: list[str]


def plan_sync(gold: pa.Table, indexed: pa.Table) -> SyncPlan:
    """Which gold chunks need a vector, and which indexed ids no longer exist in gold."""
    have = set(zip(indexed["chunk_id"].to_pylist(), indexed["content_hash"].to_pylist(), strict=True))
    wanted = list(zip(gold["chunk_id"].to_pylist(), gold["content_hash"].to_pylist(), strict=True))
    mask = pa.array([pair not in have for pair in wanted], type=pa.bool_())
    gold_ids = {cid for cid, _ in wanted}
    stale = sorted({cid for cid, _ in have} - gold_ids)
    return SyncPlan(gold.filter(mask), stale)


@dataclass(frozen=True)
class SyncResult:
    embedded: int
    deleted: int
    rows: int
    version: int
    embed_seconds: float
    table_name: str = ""
    activated: bool = False


def sync_embeddings(
    db: lancedb.DBConnection,
    name: str,
    gold: pa.Table,
    gold_version: int,
    encode: Callable[[list[str]], np.ndarray],
    dimension: int | Callable[[], int],
    model_name: str,
    model_version: str,
    vector_index_min_rows: int = 10_000,
    keep_versions: timedelta = timedelta(days=7),
    validate: Callable[[lancedb.table.Table], bool] | None = None,
    activate_new: bool = True,
    model_info: dict | None = None,
) -> SyncResult:
    """Bring this model's table of index ``name`` in line with ``gold`` and make sure serving reads it.

    Embeds new or changed chunks and deletes stale ones. When the model's table is not the active one
    (the first build, or a model change), ``validate`` must accept it; it is then activated, or with
    ``activate_new`` false only built (a promotion candidate, activated after its evaluation).
    """
    model_id = f"{model_name}@{model_version}"
    physical = model_table_name(name, model_id)
    table = open_or_create(db, physical, dimension, model_id, model_info)
    indexed = (
        table.search().select(["chunk_id", "content_hash"]).limit(None).to_arrow()
        if table.count_rows()
        else (pa.table({"chunk_id": pa.array([], pa.string()), "content_hash": pa.array([], pa.string())}))
    )
    plan = plan_sync(gold, indexed)
    started = time.perf_counter()
    if plan.to_delete:
        for start in range(0, len(plan.to_delete), 500):
            ids = ", ".join(f"'{cid}'" for cid in plan.to_delete[start : start + 500])
            table.delete(f"chunk_id IN ({ids})")
    if plan.to_embed.num_rows:
        batch = plan.to_embed
        texts = [
            embedding_input(t or "", h or "", x)
            for t, h, x in zip(
                batch["title"].to_pylist(),
                batch["heading_path"].to_pylist(),
                batch["text"].to_pylist(),
                strict=True,
            )
        ]
        vectors = encode(texts)
        n = batch.num_rows
        optional = [c for c in OPTIONAL_INDEXED_COLUMNS if c in batch.column_names]
        rows = (
            batch.select(INDEXED_COLUMNS + optional)
            .append_column(
                "vector",
                pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.reshape(-1)), table.schema.field("vector").type.list_size
                ),
            )
            .append_column("delta_version", pa.array([gold_version] * n, pa.int64()))
            .append_column("model_name", pa.array([model_name] * n))
            .append_column("model_version", pa.array([model_version] * n))
            .append_column("created_at", pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")))
        )
        rows = with_citations(rows)
        for column in table.schema.names:  # an optional column the gold table lacks stays null
            if column not in rows.column_names:
                rows = rows.append_column(column, pa.nulls(n, table.schema.field(column).type))
        # One cast to the table's schema types every column, the gold ones included.
        rows = rows.select(table.schema.names).cast(table.schema.remove_metadata())
        table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all().execute(rows)
    embed_seconds = time.perf_counter() - started
    changed = plan.to_embed.num_rows or plan.to_delete or not _index_types(table) & {"FTS", "INVERTED"}
    if changed and table.count_rows():
        maintain_indexes(table, vector_index_min_rows, keep_versions)
    activated = False
    current = active_table_name(db, name)
    if current != physical:  # a new model's table: it must validate before it goes live or is kept
        if validate is not None and not validate(table):
            raise CandidateRejectedError(f"{physical} failed validation; serving stays on {current}")
        if activate_new:
            activate(db, name, physical)
            activated = True
    return SyncResult(
        plan.to_embed.num_rows,
        len(plan.to_delete),
        table.count_rows(),
        table.version,
        embed_seconds,
        physical,
        activated,
    )


def _index_types(table: lancedb.table.Table) -> set[str]:
    """Index kinds on the table, spelled without case or underscores (``FTS``, ``IVFHNSWSQ``)."""
    return {str(getattr(i, "index_type", "")).upper().replace("_", "") for i in table.list_indices()}


def maintain_indexes(
    table: lancedb.table.Table, vector_index_min_rows: int, keep_versions: timedelta
) -> None:
    """Full-text index on the text; a label-list index on the access groups (so serving's access filter
    is an index lookup, not a scan); an HNSW vector index once the table is big enough for exact search
    to cost more than the index; then compaction, index refresh and cleanup of versions older than
    ``keep_versions`` (younger ones stay for time travel and rollback).
    """
    table.create_index("text", config=FTS(), replace=True)
    if "access_groups" in table.schema.names and "LABELLIST" not in _index_types(table):
        table.create_index("access_groups", config=LabelList(), replace=True)
    if table.count_rows() >= vector_index_min_rows and "IVFHNSWSQ" not in _index_types(table):
        table.create_index("vector", config=IvfHnswSq(distance_type="cosine"), replace=True)
    table.optimize(cleanup_older_than=keep_versions)
