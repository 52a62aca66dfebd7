"""The shape every incremental MERGE asset shares: apply only what upstream wrote since the last run.

``silver_<source>``, ``silver_documents`` and ``document_chunks`` each read the upstream rows written
after the version they last applied (Change Data Feed), quarantine what they reject and MERGE the rest;
every write of the run carries the transaction id (target <- upstream, upstream version), so a re-run
after a crash neither skips nor repeats a change, and the applied version is kept in the target's Delta
log. With nothing new, no Spark session starts. The documents' assets apply a small increment (at most
``small_increment_max_rows`` upstream changes, ``pending_increments``) in-process with the same
rules, transaction ids and quarantine: one document's event costs a Spark MERGE's seconds otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from assets.quarantine import to_quarantine, write_quarantine
from resources.lakehouse import Lakehouse
from resources.spark import Spark

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


@dataclass(frozen=True)
class Increment:
    """What one run of an incremental asset applies."""

    session: SparkSession
    changes: DataFrame  # upstream rows written after the last applied version, with ``_change_type``
    upstream_version: int
    txn: tuple[str, int]  # (``<target><-<upstream>``, upstream version): every write of the run is idempotent


def _unapplied(lakehouse: Lakehouse, upstream: str, target: str) -> tuple[str, int, int | None] | None:
    """(writer id, upstream version, version ``target`` last applied) when upstream has news, else None."""
    app_id = f"{target}<-{upstream}"
    upstream_version = lakehouse.version(upstream)
    applied = lakehouse.transaction_version(target, app_id)
    if upstream_version is None or (applied is not None and applied >= upstream_version):
        return None
    return app_id, upstream_version, applied


def pending_increment(spark: Spark, lakehouse: Lakehouse, upstream: str, target: str) -> Increment | None:
    """The upstream changes ``target`` has not applied yet, or None when it is up to date."""
    pending = _unapplied(lakehouse, upstream, target)
    return None if pending is None else _on_spark(spark, lakehouse, upstream, pending)


def _on_spark(
    spark: Spark, lakehouse: Lakehouse, upstream: str, pending: tuple[str, int, int | None]
) -> Increment:
    app_id, upstream_version, applied = pending
    session = spark.session()
    changes = lakehouse.changes(session, upstream, applied)
    return Increment(session, changes, upstream_version, (app_id, upstream_version))


@dataclass(frozen=True)
class SmallIncrement:
    """An increment small enough to apply in-process: its upstream changes as Arrow."""

    changes: pa.Table  # with ``_change_type`` and ``_commit_version``, as ``Increment.changes``
    upstream_version: int
    txn: tuple[str, int]


def pending_increments(
    spark: Spark, lakehouse: Lakehouse, upstream: str, target: str
) -> tuple[SmallIncrement | None, Increment | None]:
    """What ``target`` has not applied yet: (the changes in Arrow, None) when there are at most
    ``small_increment_max_rows`` of them, (None, the Spark increment) when there are more, (None, None)
    when it is up to date."""
    pending = _unapplied(lakehouse, upstream, target)
    if pending is None:
        return None, None
    app_id, upstream_version, applied = pending
    if lakehouse.small_increment_max_rows > 0:
        changes = lakehouse.changes_arrow(upstream, applied, lakehouse.small_increment_max_rows)
        if changes is not None:
            return SmallIncrement(changes, upstream_version, (app_id, upstream_version)), None
    return None, _on_spark(spark, lakehouse, upstream, pending)


def quarantine_rejected(
    increment: Increment,
    lakehouse: Lakehouse,
    by_layer: dict[str, DataFrame],
    source: str,
    source_file: Column,
    line: Column,
    record_key: Column,
    raw: Column,
) -> None:
    """Record each layer's rejected rows (which carry ``reason`` and ``run_id``) once, with the run's txn."""
    for layer, rows in by_layer.items():
        shaped = to_quarantine(rows, source, source_file, line, record_key, raw)
        write_quarantine(lakehouse, layer, shaped, increment.txn)
