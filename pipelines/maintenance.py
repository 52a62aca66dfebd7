"""Table maintenance: Delta OPTIMIZE and VACUUM, LanceDB compaction, version cleanup and index refresh.

Plain functions over the engines (tested without Dagster); ``pipelines/jobs.py`` wraps them in the
maintenance job. Every table under the Delta root is found by its ``_delta_log``, so tables added later
are maintained too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import lancedb
import pyarrow.fs as pafs
from pyspark.sql import SparkSession

from assets.landing import filesystem
from resources.lakehouse import open_delta
from resources.lancedb.sync import maintain_indexes
from resources.lancedb.tables import POINTER_SUFFIX

log = logging.getLogger(__name__)

# Delta's own floor: VACUUM below this refuses to run unless its safety check is switched off.
DELTA_SAFE_RETENTION_HOURS = 168.0
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


@dataclass(frozen=True)
class DeltaMaintenance:
    table: str
    files_before: int
    files_after: int
    files_vacuumed: int
    version: int


@dataclass(frozen=True)
class LanceMaintenance:
    table: str
    versions_before: int
    versions_after: int
    rows: int
    version: int


def delta_tables(delta_uri: str, storage_options: dict[str, str] | None = None) -> list[str]:
    """Names of the Delta tables directly under ``delta_uri`` (folders that hold a ``_delta_log``)."""
    fs, base = filesystem(delta_uri, storage_options)
    base = base.rstrip("/")
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    names = []
    for entry in fs.get_file_info(pafs.FileSelector(base)):
        is_dir = entry.type == pafs.FileType.Directory
        if is_dir and fs.get_file_info(f"{entry.path}/_delta_log").type == pafs.FileType.Directory:
            names.append(entry.path.rstrip("/").rsplit("/", 1)[-1])
    return sorted(names)


@contextmanager
def vacuum_retention(spark: SparkSession, retain_hours: float) -> Iterator[None]:
    """Allow a retention below Delta's 168 h floor only when configured so, explicitly and logged."""
    if retain_hours >= DELTA_SAFE_RETENTION_HOURS:
        yield
        return
    previous = spark.conf.get(RETENTION_CHECK, "true")
    log.warning(
        "VACUUM retention %.1f h is below Delta's safe %d h: setting %s=false for this maintenance; "
        "readers or writers older than that may lose files they still need",
        retain_hours,
        int(DELTA_SAFE_RETENTION_HOURS),
        RETENTION_CHECK,
    )
    spark.conf.set(RETENTION_CHECK, "false")
    try:
        yield
    finally:
        spark.conf.set(RETENTION_CHECK, previous)


def optimize_and_vacuum(
    spark: SparkSession, path: str, retain_hours: float, storage_options: dict[str, str] | None = None
) -> DeltaMaintenance:
    """Compact small files (OPTIMIZE), then delete files no version within ``retain_hours`` needs (VACUUM).

    Spark does the two operations; the file counts, version and VACUUM metrics are read from the log
    with delta-rs, which costs milliseconds where each Spark ``detail()`` or ``history()`` is a job.
    """
    from delta.tables import DeltaTable

    table = DeltaTable.forPath(spark, path)
    files_before = open_delta(path, storage_options).get_add_actions().num_rows
    if files_before > 1:  # one file or none: nothing to compact
        table.optimize().executeCompaction()
    with vacuum_retention(spark, retain_hours):
        table.vacuum(retain_hours)
    after = open_delta(path, storage_options)
    vacuumed = next(
        (
            int((commit.get("operationMetrics") or {}).get("numDeletedFiles", 0))
            for commit in after.history(5)
            if commit.get("operation") == "VACUUM END"
        ),
        0,
    )
    files_after, version = after.get_add_actions().num_rows, after.version()
    name = path.rstrip("/").rsplit("/", 1)[-1]
    log.info(
        "delta maintenance %s: files %d -> %d, vacuumed %d, version %d",
        name,
        files_before,
        files_after,
        vacuumed,
        version,
    )
    return DeltaMaintenance(name, files_before, files_after, vacuumed, version)


def maintain_delta(
    spark: SparkSession, delta_uri: str, retain_hours: float, storage_options: dict[str, str] | None = None
) -> list[DeltaMaintenance]:
    return [
        optimize_and_vacuum(spark, f"{delta_uri.rstrip('/')}/{name}", retain_hours, storage_options)
        for name in delta_tables(delta_uri, storage_options)
    ]


def maintain_lancedb(
    db: lancedb.DBConnection, vector_index_min_rows: int, keep_versions: timedelta
) -> list[LanceMaintenance]:
    """Every table: compaction and cleanup of versions older than ``keep_versions``; embedding tables
    also get their full-text index rebuilt and (past the row threshold) their vector index.
    """
    results = []
    for name in db.list_tables().tables:
        table = db.open_table(name)
        before = len(table.list_versions())
        if name.endswith(POINTER_SUFFIX) or "text" not in table.schema.names or not table.count_rows():
            table.optimize(cleanup_older_than=keep_versions)
        else:
            maintain_indexes(table, vector_index_min_rows, keep_versions)
        after = len(table.list_versions())
        log.info("lancedb maintenance %s: versions %d -> %d", name, before, after)
        results.append(LanceMaintenance(name, before, after, table.count_rows(), table.version))
    return results
