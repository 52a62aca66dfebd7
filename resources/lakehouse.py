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
    # delta-rs options for object storage (endpoint, region); empty on a local disk.
    storage_options: dict[str, str] = {}  # noqa: RUF012  (pydantic copies field defaults)
    # VACUUM keeps files that any version younger than this still needs (maintenance job).
    vacuum_retain_hours: float = 168.0

    def landing_path(self, source: str) -> str:
        return f"{self.landing_uri.rstrip('/')}/{source}"

    def table_path(self, name: str) -> str:
        return f"{self.delta_uri.rstrip('/')}/{name}"

    def checkpoint_path(self, name: str) -> str:
        return f"{self.checkpoint_uri.rstrip('/')}/{name}"

    def exists(self, name: str) -> bool:
        return table_version(self.table_path(name), self.storage_options) is not None

    def read(self, spark: SparkSession, name: str) -> DataFrame:
        return spark.read.format("delta").load(self.table_path(name))

    def version(self, name: str) -> int | None:
        return table_version(self.table_path(name), self.storage_options)

    def info(self, name: str) -> TableInfo | None:
        return table_info(name, self.table_path(name), self.storage_options)

    def read_arrow(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """A (small) table into Arrow without Spark."""
        return read_table(self.table_path(name), columns, self.storage_options)

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


def storage_options_for(path: str, storage_options: dict[str, str] | None = None) -> dict[str, str] | None:
    """The delta-rs options for ``path``: those given, else (for object storage) the settings' ones."""
    if storage_options:
        return storage_options
    if path.startswith(("s3://", "s3a://")):
        from resources.settings import get_settings

        return get_settings().object_store_options() or None
    return None


def open_delta(path: str, storage_options: dict[str, str] | None = None) -> RsDeltaTable:
    """A Delta table through delta-rs (no JVM); object-store paths get their storage options."""
    return RsDeltaTable(path, storage_options=storage_options_for(path, storage_options))


def table_version(path: str, storage_options: dict[str, str] | None = None) -> int | None:
    """The table's current Delta version, or None where no table exists yet (no JVM needed)."""
    try:
        return open_delta(path, storage_options).version()
    except TableNotFoundError:
        return None


def table_info(name: str, path: str, storage_options: dict[str, str] | None = None) -> TableInfo | None:
    try:
        table = open_delta(path, storage_options)
    except TableNotFoundError:
        return None
    history = table.history(1)
    updated = datetime.fromtimestamp(history[0]["timestamp"] / 1000, tz=UTC) if history else datetime.now(UTC)
    rows = table.to_pyarrow_dataset().count_rows()
    return TableInfo(name, path, table.version(), rows, updated)


def read_table(
    path: str, columns: list[str] | None = None, storage_options: dict[str, str] | None = None
) -> pa.Table:
    """Read a (small) Delta table into Arrow without Spark."""
    return open_delta(path, storage_options).to_pyarrow_dataset().to_table(columns=columns)


def local_path(uri: str) -> Path | None:
    """The filesystem path of a local URI, or None for object storage."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    return Path(uri.removeprefix("file://"))
