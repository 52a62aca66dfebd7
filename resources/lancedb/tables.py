"""LanceDB tables of the chunk index: their schema and model identity, citations, and the active pointer.

One physical table per model, so vectors never mix: ``<logical>__<model>``. A pointer table
(``<logical>__active``) says which one serving reads; its history doubles as the rollback log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime

import lancedb
import pyarrow as pa

MODEL_METADATA_KEY = b"groundwork.model"
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


def model_table_name(logical: str, model_id: str) -> str:
    return f"{logical}__{re.sub(r'[^a-z0-9]+', '-', model_id.lower()).strip('-')}"


def open_table(db: lancedb.DBConnection, name: str) -> lancedb.table.Table | None:
    """The table ``name``, or None where it does not exist."""
    try:
        return db.open_table(name)
    except ValueError:
        return None


def activation_history(db: lancedb.DBConnection, logical: str) -> list[dict]:
    pointer = open_table(db, f"{logical}{POINTER_SUFFIX}")
    rows = pointer.to_arrow().to_pylist() if pointer is not None else []
    return sorted(rows, key=lambda r: r["activated_at"])


def active_table_name(db: lancedb.DBConnection, logical: str) -> str | None:
    history = activation_history(db, logical)
    return history[-1]["table_name"] if history else None


def open_active(db: lancedb.DBConnection, logical: str) -> lancedb.table.Table | None:
    """The table serving reads now, or None before the first build."""
    name = active_table_name(db, logical)
    return open_table(db, name) if name else None


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
    pointer = open_table(db, f"{logical}{POINTER_SUFFIX}")
    if pointer is None:
        db.create_table(f"{logical}{POINTER_SUFFIX}", data=row)
    else:
        pointer.add(row)


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
