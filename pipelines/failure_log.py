"""The ``pipeline_failures`` Delta table: written by the run failure sensor (``pipelines/failures.py``),
read by `groundwork status`. delta-rs only: no JVM, no Dagster."""

from __future__ import annotations

import pyarrow as pa
from deltalake import write_deltalake

from resources.lakehouse import read_table, storage_options_for, table_version
from resources.settings import Settings

FAILURES_TABLE = "pipeline_failures"
FAILURE_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("job_name", pa.string()),
        pa.field("step_key", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("message", pa.string()),
        pa.field("cause", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("failed_at", pa.timestamp("us", tz="UTC")),
    ]
)


def failures_path(settings: Settings) -> str:
    return f"{settings.delta_uri.rstrip('/')}/{FAILURES_TABLE}"


def record_failures(settings: Settings, rows: list[dict]) -> int:
    """Append the rows to ``pipeline_failures`` (created on first use); returns the table's version."""
    path = failures_path(settings)
    write_deltalake(
        path,
        pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA),
        mode="append",
        storage_options=storage_options_for(path, settings.object_store_options()),
    )
    return table_version(path, settings.object_store_options()) or 0


def recent_failures(settings: Settings, limit: int = 10) -> list[dict]:
    """The latest failures, newest first; empty before the first one."""
    path = failures_path(settings)
    if table_version(path, settings.object_store_options()) is None:
        return []
    rows = read_table(path, storage_options=settings.object_store_options()).to_pylist()
    return sorted(rows, key=lambda r: r["failed_at"], reverse=True)[:limit]
