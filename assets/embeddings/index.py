"""Keep the LanceDB index exactly in step with the gold chunks, embedding only what changed.

A chunk is embedded when its (chunk id, content hash) is not yet in the table for this model;
rows whose chunk left the gold table are deleted. One physical table per model, so vectors never mix:
``<logical>__<model>``. A pointer table (``<logical>__active``) says which one serving reads; a new
model's table is built beside the current one and becomes active only when complete and validated,
and the old one stays for rollback.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import FTS, IvfHnswSq, LabelList

from assets.chunks.chunking import embedding_input

if TYPE_CHECKING:
    import lance

MODEL_METADATA_KEY = b"groundwork.model"
# Query-time settings of the HNSW index, measured on clustered data (tests/test_indexes.py): ef 100 alone
# gave recall@10 0.89-0.92 against exact search; ef 200 with 40 probes and re-ranking the top 5x
# candidates on full-precision vectors gave 0.988-1.0.
VECTOR_SEARCH_EF = 200
VECTOR_SEARCH_NPROBES = 40
VECTOR_SEARCH_REFINE = 5
# Candidates re-read at full precision for an exact re-rank (``rerank_exact``): the first n x RERANK_POOL
# in the index's order. At 6k and 1M rows a larger pool found none more of the exact top 10.
RERANK_POOL = 1.5
# The gold columns that say where a chunk came from: every hit cites them.
SOURCE_COLUMNS = ["chunk_id", "document_id", "chunk_index", "path", "title", "heading_path", "page"]
INDEXED_COLUMNS = [*SOURCE_COLUMNS, "text", "access_groups", "content_hash"]
# Indexed when the gold table has them (older gold tables and synthetic corpora may not).
OPTIONAL_INDEXED_COLUMNS = ["media_type"]
# What a search hit cites, kept once more as one JSON column, ``citation``, written with the row: a hit's
# citation is then read as one column instead of eight (at 1M rows a query went from 4.4 to 3.3 ms,
# docs/benchmarks.md). The index is only ever written whole rows (``merge_insert``), so the copy cannot
# drift from its columns; access groups stay a column of their own, the one source for access checks.
CITATION_COLUMN = "citation"
CITATION_FIELDS = [*SOURCE_COLUMNS, "delta_version"]


def embeddings_schema(dimension: int, model_id: str, model_info: dict | None = None) -> pa.Schema:
    """``model_info`` (e.g. the MLflow registry name and version) is kept in the table's metadata."""
    identity = {**(model_info or {}), "model_id": model_id, "dimension": dimension}
    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("document_id", pa.string()),
            pa.field("chunk_index", pa.int32()),
            pa.field("text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dimension)),
            pa.field("path", pa.string()),
            pa.field("title", pa.string()),
            pa.field("media_type", pa.string()),
            pa.field("heading_path", pa.string()),
            pa.field("page", pa.int32()),
            pa.field("access_groups", pa.list_(pa.string())),
            pa.field("delta_version", pa.int64()),
            pa.field("content_hash", pa.string()),
            pa.field("model_name", pa.string()),
            pa.field("model_version", pa.string()),
            pa.field("created_at", pa.timestamp("us", tz="UTC")),
            pa.field(CITATION_COLUMN, pa.string()),
        ],
        metadata={MODEL_METADATA_KEY: json.dumps(identity).encode()},
    )


def citations(rows: pa.Table | pa.RecordBatch) -> pa.Array:
    """The ``citation`` column of ``rows``: each row's CITATION_FIELDS as one JSON object."""
    fields = rows.select(CITATION_FIELDS).to_pylist()
    return pa.array([json.dumps(f, separators=(",", ":")) for f in fields], pa.string())


def with_citations(rows: pa.Table) -> pa.Table:
    """``rows`` with their ``citation`` column."""
    return rows.append_column(CITATION_COLUMN, citations(rows))


def add_citations(table: lancedb.table.Table) -> None:
    """Give a table built before the ``citation`` column one, computed from its rows in one pass."""
    if not table.count_rows():
        table.add_columns(pa.field(CITATION_COLUMN, pa.string()))
        return

    def compute(batch: pa.RecordBatch) -> pa.RecordBatch:
        return pa.record_batch([citations(batch)], names=[CITATION_COLUMN])

    table.to_lance().add_columns(compute, read_columns=CITATION_FIELDS)
    table.checkout_latest()


def table_model(table: lancedb.table.Table) -> dict:
    """The model a table was built with, from its schema metadata."""
    raw = (table.schema.metadata or {}).get(MODEL_METADATA_KEY)
    return json.loads(raw) if raw else {}


POINTER_SUFFIX = "__active"


class CandidateRejectedError(RuntimeError):
    """A new model's table was built but failed validation; serving stays on the current table."""


def model_table_name(logical: str, model_id: str) -> str:
    return f"{logical}__{re.sub(r'[^a-z0-9]+', '-', model_id.lower()).strip('-')}"


def _open(db: lancedb.DBConnection, name: str) -> lancedb.table.Table | None:
    try:
        return db.open_table(name)
    except ValueError:
        return None


def activation_history(db: lancedb.DBConnection, logical: str) -> list[dict]:
    pointer = _open(db, f"{logical}{POINTER_SUFFIX}")
    rows = pointer.to_arrow().to_pylist() if pointer is not None else []
    return sorted(rows, key=lambda r: r["activated_at"])


def active_table_name(db: lancedb.DBConnection, logical: str) -> str | None:
    history = activation_history(db, logical)
    return history[-1]["table_name"] if history else None


def open_active(db: lancedb.DBConnection, logical: str) -> lancedb.table.Table | None:
    """The table serving reads now, or None before the first build."""
    name = active_table_name(db, logical)
    return _open(db, name) if name else None


def activate(db: lancedb.DBConnection, logical: str, table_name: str) -> None:
    """Point serving at ``table_name``; an append, so the history doubles as the rollback log."""
    table = db.open_table(table_name)
    row = pa.table(
        {
            "table_name": [table_name],
            "model_id": [table_model(table).get("model_id", "")],
            "activated_at": pa.array([datetime.now(UTC)], pa.timestamp("us", tz="UTC")),
        }
    )
    pointer = _open(db, f"{logical}{POINTER_SUFFIX}")
    if pointer is None:
        db.create_table(f"{logical}{POINTER_SUFFIX}", data=row)
    else:
        pointer.add(row)


def rollback(db: lancedb.DBConnection, logical: str) -> str:
    """Re-activate the table that was active before the current one; returns its name."""
    history = [r["table_name"] for r in activation_history(db, logical)]
    previous = [name for name in history if name != history[-1]] if history else []
    if not previous:
        raise LookupError(f"no earlier table of {logical!r} to roll back to")
    activate(db, logical, previous[-1])
    return previous[-1]


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


def open_or_create(
    db: lancedb.DBConnection,
    name: str,
    dimension: int | Callable[[], int],
    model_id: str,
    model_info: dict | None = None,
) -> lancedb.table.Table:
    """The model's table, created on first use. ``dimension`` may be a function: it is asked only when
    the table is created (knowing it means loading the model, which a run with nothing to embed skips)."""
    if name in db.list_tables().tables:
        table = db.open_table(name)
        built_with = table_model(table).get("model_id")
        if built_with and built_with != model_id:
            raise ValueError(
                f"LanceDB table {name!r} holds vectors of {built_with}, not {model_id}: "
                "a model change builds a new table"
            )
        if CITATION_COLUMN not in table.schema.names:
            add_citations(table)
        return table
    size = dimension() if callable(dimension) else dimension
    return db.create_table(name, schema=embeddings_schema(size, model_id, model_info))


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
    (the first build, or a model change), it is activated only if ``validate`` accepts it; with
    ``activate_new`` false it is only built (a promotion candidate, activated after its evaluation).
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
    if current != physical and activate_new:
        if validate is not None and not validate(table):
            raise CandidateRejectedError(f"{physical} failed validation; serving stays on {current}")
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


def nearest(table: lancedb.table.Table, vector: np.ndarray, k: int, exact: bool = False):
    """A cosine nearest-neighbour query; ``exact`` bypasses the vector index (the recall baseline)."""
    query = table.search(vector).distance_type("cosine").limit(k)
    if exact:
        return query.bypass_vector_index()
    return query.ef(VECTOR_SEARCH_EF).nprobes(VECTOR_SEARCH_NPROBES).refine_factor(VECTOR_SEARCH_REFINE)


def nearest_arrow(
    dataset: lance.LanceDataset,
    vector: np.ndarray,
    k: int,
    columns: list[str],
    where: str | None = None,
    prefilter: bool = True,
    refine_factor: int | None = VECTOR_SEARCH_REFINE,
    with_row_id: bool = False,
) -> pa.Table:
    """The query ``nearest`` builds, run on the table's Lance dataset: ``columns`` plus ``_distance``
    (and ``_rowid``, for ``take_rows``).

    For the request path: at 1M rows the lancedb query builder adds about 1.5 ms to a 3.5 ms query.
    ``prefilter=False`` applies ``where`` to the ``k`` nearest rows only, so fewer than ``k`` may return;
    ``refine_factor`` times ``k`` candidates are re-ranked on full-precision vectors; ``None`` returns
    the index's order and its 8-bit quantized distances (for ``rerank_exact``).
    """
    nearest = {
        "column": "vector",
        "q": vector,
        "k": k,
        "metric": "cosine",
        "ef": max(VECTOR_SEARCH_EF, k),
        "nprobes": VECTOR_SEARCH_NPROBES,
    }
    if refine_factor is not None:
        nearest["refine_factor"] = refine_factor
    # Asking for _distance by name is Lance's future behaviour; leaving it implicit logs a warning per query.
    wanted = columns if "_distance" in columns else [*columns, "_distance"]
    return dataset.to_table(
        columns=wanted, with_row_id=with_row_id, nearest=nearest, filter=where, prefilter=prefilter
    )


def rerank_exact(
    dataset: lance.LanceDataset,
    vector: np.ndarray,
    row_ids: np.ndarray,
    k: int,
    columns: Sequence[str] = (),
) -> pa.Table:
    """The ``k`` of ``row_ids`` nearest to ``vector`` on their full-precision vectors, nearest first:
    ``columns``, ``_rowid`` and the cosine ``_distance`` (as Lance computes it).

    What ``refine_factor`` does inside the query, for candidates already chosen, in one take that reads
    the vectors and ``columns`` together: Lance's refine reads the vectors one request per row (about
    3.4 ms for 80 rows at 100k), and each take costs about 0.4 ms before its first row.
    """
    wanted = list(dict.fromkeys([*columns, "vector"]))
    taken = take_rows(dataset, row_ids.tolist(), wanted)
    stored = taken["vector"].combine_chunks()
    matrix = stored.flatten().to_numpy(zero_copy_only=False).reshape(len(stored), -1)
    query = np.asarray(vector, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
    distances = 1.0 - (matrix @ query) / np.where(norms == 0, 1.0, norms)
    order = np.argsort(distances, kind="stable")[:k]
    ranked = {name: taken[name].take(order) for name in columns}
    ranked["_rowid"] = pa.array(row_ids[order], pa.uint64())
    ranked["_distance"] = pa.array(distances[order], pa.float32())
    return pa.table(ranked)


def take_rows(dataset: lance.LanceDataset, row_ids: list[int], columns: list[str]) -> pa.Table:
    """``columns`` of the rows ``nearest_arrow`` returned as ``_rowid``, in the order given.

    Lance's own take by row id: lancedb's ``take_row_ids`` returns the rows sorted by id and costs twice
    as much (4.6 against 2.1 ms for ten rows at 1M); the method is underscored in pylance 14, so the
    pinned version is what the serving tests exercise.
    """
    return dataset._take_rows(row_ids, columns=columns)
