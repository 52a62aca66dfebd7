"""Quarantine tables, one per layer: every rejected row or file, with where it came from and why.

Nothing that lands is lost: it is either in a silver table or in a quarantine table, and the counts
reconcile (``ingestion_runs`` records them for every run). ``quarantine_bronze`` holds files or lines
that could not be read as landed (not UTF-8, corrupt PDF, malformed CSV row, empty file);
``quarantine_silver`` rows that break their contract or duplicate another; ``quarantine_gold``
documents that yield nothing to index.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake

from resources.lakehouse import Lakehouse, commit_retried, open_delta, storage_options_for

if TYPE_CHECKING:  # the readers below serve `groundwork status`, which starts no JVM
    from pyspark.sql import Column, DataFrame

LAYERS = ("bronze", "silver", "gold")
RAW_LIMIT = 4000
QUARANTINE_KEYS = ["source", "source_file", "record_key", "reason"]
QUARANTINE_SCHEMA = pa.schema(
    [
        *(pa.field(n, pa.string()) for n in ("source", "source_file")),
        pa.field("line", pa.int64()),
        *(pa.field(n, pa.string()) for n in ("record_key", "raw", "reason", "run_id")),
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC")),
    ]
)
INGESTION_RUNS_TABLE = "ingestion_runs"
INGESTION_RUNS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("run_id", pa.string()),
        *(pa.field(n, pa.int64()) for n in ("landed", "accepted", "quarantined", "duplicates", "deleted")),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)


def quarantine_table(layer: str) -> str:
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}: use one of {LAYERS}")
    return f"quarantine_{layer}"


def to_quarantine(
    rejected: DataFrame,
    source: str,
    source_file: Column,
    line: Column,
    record_key: Column,
    raw: Column,
) -> DataFrame:
    """Shape rejected rows (which carry ``reason`` and ``run_id``) into the quarantine schema."""
    from pyspark.sql import functions as F

    return rejected.select(
        F.lit(source).alias("source"),
        source_file.cast("string").alias("source_file"),
        line.cast("long").alias("line"),
        record_key.cast("string").alias("record_key"),
        F.substring(raw.cast("string"), 1, RAW_LIMIT).alias("raw"),
        F.col("reason").cast("string").alias("reason"),
        F.col("run_id").cast("string").alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
    )


def quarantine_rows(rejected, source: str, source_file, line, record_key, raw) -> pa.Table:
    """``to_quarantine`` for rejected rows in a pandas frame (a small increment's): the arguments after
    ``source`` are each a Series aligned with ``rejected`` (or None for a null column)."""
    import pandas as pd

    def column(values) -> list:
        if values is None:
            return [None] * len(rejected)
        return [None if pd.isna(v) else v for v in pd.Series(values, index=rejected.index)]

    def text(values) -> list[str | None]:
        return [None if v is None else str(v) for v in column(values)]

    return pa.table(
        {
            "source": [source] * len(rejected),
            "source_file": text(source_file),
            "line": [None if v is None else int(v) for v in column(line)],
            "record_key": text(record_key),
            "raw": [None if v is None else v[:RAW_LIMIT] for v in text(raw)],
            "reason": text(rejected["reason"]),
            "run_id": text(rejected["run_id"]),
            "quarantined_at": [datetime.now(UTC)] * len(rejected),
        },
        schema=QUARANTINE_SCHEMA,
    )


def read_quarantine(lakehouse: Lakehouse):
    """Every layer's quarantine as one pandas frame with a ``layer`` column (no JVM: delta-rs)."""
    import pandas as pd

    frames = [
        lakehouse.read_arrow(quarantine_table(layer)).to_pandas().assign(layer=layer)
        for layer in LAYERS
        if lakehouse.exists(quarantine_table(layer))
    ]
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["layer", "source", "reason"])
    )


def last_ingestion_runs(lakehouse: Lakehouse) -> list[dict]:
    """Each source's reconciliation for its most recent run (landed, accepted, quarantined, ...)."""
    if not lakehouse.exists(INGESTION_RUNS_TABLE):
        return []
    runs = lakehouse.read_arrow(INGESTION_RUNS_TABLE).to_pandas()
    latest = runs.sort_values("recorded_at").groupby("source").tail(1).sort_values("source")
    return latest.to_dict("records")


def write_quarantine(
    lakehouse: Lakehouse, layer: str, rows: DataFrame | pa.Table, txn: tuple[str, int]
) -> int:
    """Record rejected rows once: a replayed batch (same ``txn``) or the same rejection seen again on a
    rebuilt partition is not added twice. Rejections are few, so they are collected in one Spark job
    (or come in Arrow from a small increment) and inserted with delta-rs: a Spark MERGE (and the
    emptiness check before it) cost 2-3 s per layer and step on local Spark, whatever the batch size."""
    rejected = (rows if isinstance(rows, pa.Table) else rows.toArrow()).cast(QUARANTINE_SCHEMA)
    return lakehouse.insert_new(quarantine_table(layer), rejected, QUARANTINE_KEYS, txn)


def record_ingestion_run(
    lakehouse: Lakehouse,
    source: str,
    run_id: str,
    landed: int,
    accepted: int,
    quarantined: int,
    duplicates: int,
    deleted: int = 0,
) -> dict[str, int]:
    """Record this run's reconciliation for ``source`` (landed = accepted + quarantined + duplicates).

    One row, written with delta-rs (a Spark write costs seconds); a retried step replaces its run's row.
    """
    if landed != accepted + quarantined + duplicates:
        raise AssertionError(
            f"{source}: counts do not reconcile: landed {landed} != accepted {accepted} + quarantined "
            f"{quarantined} + duplicates {duplicates}"
        )
    counts = {
        "landed": landed,
        "accepted": accepted,
        "quarantined": quarantined,
        "duplicates": duplicates,
        "deleted": deleted,
    }
    row = pa.Table.from_pylist(
        [{"source": source, "run_id": run_id, **counts, "recorded_at": datetime.now(UTC)}],
        schema=INGESTION_RUNS_SCHEMA,
    )
    path = lakehouse.table_path(INGESTION_RUNS_TABLE)
    options = storage_options_for(path, lakehouse.storage_options)

    def write() -> None:
        if _recorded(lakehouse, source, run_id):  # a retried step replaces its run's record
            (
                open_delta(path, lakehouse.storage_options)
                .merge(row, "t.source = s.source AND t.run_id = s.run_id", source_alias="s", target_alias="t")
                .when_matched_update_all()
                .execute()
            )
        else:
            write_deltalake(path, row, mode="append", storage_options=options)

    commit_retried(path, write)
    return counts


def _recorded(lakehouse: Lakehouse, source: str, run_id: str) -> bool:
    if not lakehouse.exists(INGESTION_RUNS_TABLE):
        return False
    # Filtered on read: Parquet statistics skip other runs' records instead of reading the table.
    where = (pc.field("source") == source) & (pc.field("run_id") == run_id)
    return lakehouse.read_arrow(INGESTION_RUNS_TABLE, columns=["run_id"], where=where).num_rows > 0
