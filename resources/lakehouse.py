"""Where the Delta tables and landing zones live, and the one way to read and write them.

Writes go through Spark (the pipelines' engine). Quick reads of metadata and small tables (the CLI,
serving, tests) use delta-rs through the ``deltalake`` package, which needs no JVM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from dagster import ConfigurableResource
from deltalake import DeltaTable as RsDeltaTable
from deltalake.exceptions import TableNotFoundError
from pyspark.sql import DataFrame, SparkSession

CHANGE_DATA_FEED = {"delta.enableChangeDataFeed": "true"}


@dataclass(frozen=True)
class TableInfo:
    """What `groundwork status` and materialization metadata say about one Delta table."""

    name: str
    path: str
    version: int
    rows: int
    updated_at: datetime


class LakehouseResource(ConfigurableResource):
    """Paths of the landing zones, Delta tables and streaming checkpoints."""

    landing_uri: str
    delta_uri: str
    checkpoint_uri: str

    def landing_path(self, source: str) -> str:
        return f"{self.landing_uri.rstrip('/')}/{source}"

    def table_path(self, name: str) -> str:
        return f"{self.delta_uri.rstrip('/')}/{name}"

    def checkpoint_path(self, name: str) -> str:
        return f"{self.checkpoint_uri.rstrip('/')}/{name}"

    def exists(self, name: str) -> bool:
        return table_version(self.table_path(name)) is not None

    def read(self, spark: SparkSession, name: str) -> DataFrame:
        return spark.read.format("delta").load(self.table_path(name))

    def version(self, name: str) -> int | None:
        return table_version(self.table_path(name))

    def info(self, name: str) -> TableInfo | None:
        return table_info(name, self.table_path(name))

    def append(self, df: DataFrame, name: str, properties: dict[str, str] | None = None) -> int:
        """Append rows (creating the table on first write); returns the new Delta version."""
        path = self.table_path(name)
        writer = df.write.format("delta").mode("append").option("mergeSchema", "true")
        for key, value in (properties or {}).items():
            writer = writer.option(key, value)
        writer.save(path)
        return table_version(path) or 0

    def merge(
        self,
        spark: SparkSession,
        df: DataFrame,
        name: str,
        keys: Sequence[str],
        changed_when: str | None = None,
        delete_missing: bool = False,
        properties: dict[str, str] | None = None,
    ) -> int:
        """Upsert ``df`` into the table by ``keys`` with Delta MERGE; returns the table's version.

        ``changed_when`` is a SQL condition over ``s`` (source) and ``t`` (target) that limits updates
        to rows that really changed, so a re-run with the same input rewrites nothing.
        ``delete_missing`` removes target rows absent from ``df`` (``df`` is then the whole truth).
        """
        from delta.tables import DeltaTable

        path = self.table_path(name)
        if table_version(path) is None:
            writer = df.write.format("delta").mode("overwrite")
            for key, value in (properties or CHANGE_DATA_FEED).items():
                writer = writer.option(key, value)
            writer.save(path)
            return table_version(path) or 0
        condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        merge = (
            DeltaTable.forPath(spark, path)
            .alias("t")
            .merge(df.alias("s"), condition)
            .whenMatchedUpdateAll(condition=changed_when)
            .whenNotMatchedInsertAll()
        )
        if delete_missing:
            merge = merge.whenNotMatchedBySourceDelete()
        merge.execute()
        return table_version(path) or 0


def table_version(path: str) -> int | None:
    """The table's current Delta version, or None where no table exists yet (no JVM needed)."""
    try:
        return RsDeltaTable(path).version()
    except TableNotFoundError:
        return None


def table_info(name: str, path: str) -> TableInfo | None:
    try:
        table = RsDeltaTable(path)
    except TableNotFoundError:
        return None
    history = table.history(1)
    updated = datetime.fromtimestamp(history[0]["timestamp"] / 1000, tz=UTC) if history else datetime.now(UTC)
    rows = table.to_pyarrow_dataset().count_rows()
    return TableInfo(name, path, table.version(), rows, updated)


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    """Read a (small) Delta table into Arrow without Spark."""
    return RsDeltaTable(path).to_pyarrow_dataset().to_table(columns=columns)


def local_path(uri: str) -> Path | None:
    """The filesystem path of a local URI, or None for object storage."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    return Path(uri.removeprefix("file://"))
