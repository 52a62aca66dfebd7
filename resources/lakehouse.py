"""Where the Delta tables and landing zones live, and the one way to read and write them.

Writes of pipeline data go through Spark (the pipelines' engine). Quick reads of metadata and small
tables (the CLI, serving, tests), small bookkeeping writes (quarantined rows, check results, run
reconciliations) and the documents' small increments (``changes_arrow``, ``merge_arrow``: a document
event applied in seconds) use delta-rs through the ``deltalake`` package, which needs no JVM: a Spark
MERGE costs seconds on local Spark however few its rows.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from deltalake import DeltaTable as RsDeltaTable
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from pydantic import BaseModel

from resources.settings import Settings, is_s3

if TYPE_CHECKING:  # Spark is imported by the methods that write; reads (status, serving) need no JVM
    import pyarrow.dataset as ds
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import types as T

CHANGE_DATA_FEED = {"delta.enableChangeDataFeed": "true"}
COMMIT_ATTEMPTS = 5
_T = TypeVar("_T")
_table_locks: dict[str, threading.Lock] = {}
_table_locks_guard = threading.Lock()


@dataclass(frozen=True)
class TableInfo:
    """What `groundwork status` and materialization metadata say about one Delta table."""

    name: str
    path: str
    version: int
    rows: int
    updated_at: datetime


class Lakehouse(BaseModel):
    """Paths of the landing zones, Delta tables and streaming checkpoints."""

    landing_uri: str
    delta_uri: str
    checkpoint_uri: str
    # Files per streaming micro-batch: bounds the memory of one batch and the work a crash repeats.
    stream_max_files_per_batch: int = 1000
    # delta-rs options for object storage (endpoint, region); empty on a local disk.
    storage_options: dict[str, str] = {}
    # VACUUM keeps files that any version younger than this still needs (maintenance job).
    vacuum_retain_hours: float = 168.0
    # Documents' increments of up to this many upstream changes are applied in-process (delta-rs); 0: Spark.
    small_increment_max_rows: int = 1000

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(
            landing_uri=s.landing_uri,
            delta_uri=s.delta_uri,
            checkpoint_uri=s.checkpoint_uri,
            stream_max_files_per_batch=s.stream_max_files_per_batch,
            storage_options=s.object_store_options(),
            vacuum_retain_hours=s.delta_vacuum_retain_hours,
            small_increment_max_rows=s.small_increment_max_rows,
        )

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

    def schema(self, name: str) -> T.StructType:
        """The table's Spark schema, from its Delta log (Delta stores it as Spark's JSON; no JVM)."""
        from pyspark.sql import types as T

        return T.StructType.fromJson(
            json.loads(open_delta(self.table_path(name), self.storage_options).schema().to_json())
        )

    def arrow_schema(self, name: str) -> pa.Schema | None:
        """The table's columns as an Arrow schema (plain strings), or None where no table exists yet."""
        try:
            table = open_delta(self.table_path(name), self.storage_options)
        except TableNotFoundError:
            return None
        return _plain_types(pa.schema(table.schema().to_arrow()))

    def row_count(self, name: str) -> int:
        """Rows in the current version, from the Delta log's file statistics (no data read, no JVM)."""
        return delta_dataset(self.table_path(name), self.storage_options).count_rows()

    def info(self, name: str) -> TableInfo | None:
        return table_info(name, self.table_path(name), self.storage_options)

    def read_arrow(
        self, name: str, columns: list[str] | None = None, where: pc.Expression | None = None
    ) -> pa.Table:
        """A (small) table, or the rows matching ``where``, into Arrow without Spark."""
        return read_table(self.table_path(name), columns, self.storage_options, where)

    def read_arrow_where_in(self, name: str, column: str, values: Sequence[str]) -> pa.Table:
        """The rows whose string ``column`` is one of ``values``. The cast keeps Arrow from testing the
        values against the file statistics, which it types ``string_view`` for files delta-rs wrote:
        pyarrow 25 has no kernel that compares ``string`` with ``string_view``."""
        wanted = pc.field(column).cast(pa.string()).isin(pa.array(list(values), pa.string()))
        return self.read_arrow(name, where=wanted)

    def transaction_version(self, name: str, app_id: str) -> int | None:
        """The last ``txn_version`` an idempotent writer ``app_id`` committed to the table, if any."""
        try:
            return open_delta(self.table_path(name), self.storage_options).transaction_version(app_id)
        except TableNotFoundError:
            return None

    def insert_new(self, name: str, rows: pa.Table, keys: Sequence[str], txn: tuple[str, int]) -> int:
        """Insert the ``rows`` whose ``keys`` the table does not hold yet, with delta-rs; returns the version.

        For small batches already in Arrow. ``txn`` = (app id, version) makes the write idempotent, as
        Spark's writes are: a writer that already committed that version writes nothing again. The table
        is created (with Change Data Feed, like the Spark-created ones) on the first write.
        """
        path = self.table_path(name)
        return commit_retried(path, lambda: self._insert_new(name, rows, keys, txn))

    def _insert_new(self, name: str, rows: pa.Table, keys: Sequence[str], txn: tuple[str, int]) -> int:
        from deltalake import CommitProperties, Transaction

        path = self.table_path(name)
        try:
            table = open_delta(path, self.storage_options)
        except TableNotFoundError:
            table = None
        applied = table.transaction_version(txn[0]) if table is not None else None
        if (applied is not None and applied >= txn[1]) or rows.num_rows == 0:
            return table.version() if table is not None else 0
        commit = CommitProperties(app_transactions=[Transaction(txn[0], txn[1])])
        if table is None:
            return self._create(name, rows, commit)
        table.merge(
            rows, key_condition(keys), source_alias="s", target_alias="t", commit_properties=commit
        ).when_not_matched_insert_all().execute()
        return table.version()

    def _create(self, name: str, rows: pa.Table, commit) -> int:
        """The table's first version, written with delta-rs, with Change Data Feed like Spark's tables."""
        from deltalake import write_deltalake

        path = self.table_path(name)
        write_deltalake(
            path,
            rows,
            mode="append",
            configuration=CHANGE_DATA_FEED,
            storage_options=storage_options_for(path, self.storage_options),
            commit_properties=commit,
        )
        return self.version(name) or 0

    def append(
        self,
        df: DataFrame,
        name: str,
        properties: dict[str, str] | None = None,
        txn: tuple[str, int] | None = None,
        partition_by: Sequence[str] = (),
        replace_where: str | None = None,
    ) -> int:
        """Append rows (creating the table, with Change Data Feed, on first write); returns the version.

        ``txn`` = (app id, version) makes the write idempotent: Delta skips it when that writer has
        already committed that version, so a replayed streaming batch is not appended twice.
        ``replace_where`` atomically replaces the rows matching the predicate instead of appending.
        """
        path = self.table_path(name)
        mode = "overwrite" if replace_where else "append"
        writer = df.write.format("delta").mode(mode).option("mergeSchema", "true")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if replace_where:
            writer = writer.option("replaceWhere", replace_where)
        if txn:
            writer = writer.option("txnAppId", txn[0]).option("txnVersion", txn[1])
        created = self.version(name) is None
        for key, value in ((properties or CHANGE_DATA_FEED) if created else {}).items():
            writer = writer.option(key, value)
        writer.save(path)
        return self.version(name) or 0

    def changes(self, spark: SparkSession, name: str, after_version: int | None) -> DataFrame:
        """Rows written after ``after_version`` (from the Change Data Feed), or the whole table if None.

        Carries ``_change_type`` (insert, update_preimage, update_postimage, delete) and
        ``_commit_version``; a whole-table read marks every row an insert.
        """
        from pyspark.sql import functions as F

        current = self.version(name)
        if after_version is None or after_version >= (current or 0):
            rows = self.read(spark, name).withColumns(
                {"_change_type": F.lit("insert"), "_commit_version": F.lit(current).cast("long")}
            )
            return rows if after_version is None else rows.limit(0)
        return (
            spark.read.format("delta")
            .option("readChangeFeed", "true")
            .option("startingVersion", after_version + 1)
            .load(self.table_path(name))
            .drop("_commit_timestamp")
        )

    def changes_arrow(self, name: str, after_version: int | None, max_rows: int) -> pa.Table | None:
        """``changes`` without Spark, for a small increment: the rows written after ``after_version`` (the
        whole table if None) with ``_change_type`` and ``_commit_version``, or None when there are more
        than ``max_rows`` (read no further: that increment is Spark's)."""
        table = open_delta(self.table_path(name), self.storage_options)
        current = table.version()
        if after_version is None:
            dataset = delta_dataset(self.table_path(name), self.storage_options, table)
            if dataset.count_rows() > max_rows:
                return None
            rows = dataset.to_table()
            return rows.append_column(
                "_change_type", pa.array(["insert"] * rows.num_rows, pa.string())
            ).append_column("_commit_version", pa.array([current] * rows.num_rows, pa.int64()))
        reader = pa.RecordBatchReader.from_stream(table.load_cdf(starting_version=after_version + 1))
        batches, count = [], 0
        for batch in reader:
            count += batch.num_rows
            if count > max_rows:
                return None
            batches.append(batch)
        rows = pa.Table.from_batches(batches, reader.schema).drop_columns(["_commit_timestamp"])
        schema = _plain_types(rows.schema)
        return rows.cast(
            schema.set(schema.get_field_index("_commit_version"), pa.field("_commit_version", pa.int64()))
        )

    def merge_arrow(
        self,
        rows: pa.Table,
        name: str,
        keys: Sequence[str],
        changed_when: str | None = None,
        txn: tuple[str, int] | None = None,
    ) -> int:
        """``apply_changes`` for a small increment already in Arrow: one delta-rs MERGE with the same
        rules (``_delete`` rows delete, matched rows are rewritten only when ``changed_when``), the same
        Change Data Feed and the same transaction id (a writer that committed ``txn`` writes nothing
        again). Creates the table, with Change Data Feed, on its first write."""
        path = self.table_path(name)
        return commit_retried(path, lambda: self._merge_arrow(rows, name, keys, changed_when, txn))

    def _merge_arrow(
        self,
        rows: pa.Table,
        name: str,
        keys: Sequence[str],
        changed_when: str | None,
        txn: tuple[str, int] | None,
    ) -> int:
        from deltalake import CommitProperties, Transaction

        path = self.table_path(name)
        commit = CommitProperties(app_transactions=[Transaction(txn[0], txn[1])]) if txn else None
        columns = [c for c in rows.column_names if c != "_delete"]
        try:
            table = open_delta(path, self.storage_options)
        except TableNotFoundError:
            return self._create(name, rows.filter(pc.invert(rows["_delete"])).select(columns), commit)
        if txn and (table.transaction_version(txn[0]) or -1) >= txn[1]:
            return table.version()
        values = {f"`{c}`": f"s.`{c}`" for c in columns}
        keep = "NOT s._delete"
        (
            table.merge(
                rows,
                key_condition(keys),
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                commit_properties=commit,
            )
            .when_matched_delete(predicate="s._delete")
            .when_matched_update(
                updates=values, predicate=f"{keep} AND ({changed_when})" if changed_when else keep
            )
            .when_not_matched_insert(updates=values, predicate=keep)
            .execute()
        )
        return table.version()

    def apply_changes(
        self,
        spark: SparkSession,
        df: DataFrame,
        name: str,
        keys: Sequence[str],
        changed_when: str | None = None,
        txn: tuple[str, int] | None = None,
    ) -> int:
        """One MERGE that upserts ``df``'s rows and deletes the target rows of those flagged ``_delete``.

        Only matched rows that satisfy ``changed_when`` (SQL over ``s`` and ``t``) are rewritten.
        Columns of ``df`` the table lacks are added first (schema evolution is the caller's decision).
        """
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        path = self.table_path(name)
        columns = [c for c in df.columns if c != "_delete"]
        if self.version(name) is None:
            return self.append(df.where(~F.col("_delete")).select(*columns), name, txn=txn)
        target = DeltaTable.forPath(spark, path)
        existing = set(target.toDF().columns)
        added = [f for f in df.schema.fields if f.name in columns and f.name not in existing]
        if added:
            spec = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in added)
            spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({spec})")
            target = DeltaTable.forPath(spark, path)  # the MERGE resolves columns against this snapshot
        values = {f"`{c}`": f"s.`{c}`" for c in columns}
        keep = "NOT s._delete"
        merge = (
            target.alias("t")
            .merge(df.alias("s"), key_condition(keys))
            .whenMatchedDelete(condition="s._delete")
            .whenMatchedUpdate(condition=f"{keep} AND ({changed_when})" if changed_when else keep, set=values)
            .whenNotMatchedInsert(condition=keep, values=values)
        )
        with idempotent_dml(spark, txn):
            merge.execute()
        return self.version(name) or 0


def _plain_types(schema: pa.Schema) -> pa.Schema:
    """delta-rs reads strings as ``string_view``; pandas and the writers take plain strings."""
    return pa.schema(
        [
            f.with_type(pa.string())
            if pa.types.is_string_view(f.type) or pa.types.is_large_string(f.type)
            else f
            for f in schema
        ]
    )


def commit_retried(path: str, write: Callable[[], _T]) -> _T:
    """Run ``write``, a delta-rs read-check-commit on the table at ``path`` that several writers share
    (quarantine, ingestion runs, check results), as this process's only writer of that table at a time,
    and again when another process's commit won the race: each attempt re-reads the table (and its
    transaction ids), so a retried write neither duplicates nor skips rows."""
    with _table_locks_guard:
        lock = _table_locks.setdefault(path, threading.Lock())
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            with lock:
                return write()
        except CommitFailedError:
            if attempt == COMMIT_ATTEMPTS:
                raise
            time.sleep(random.uniform(0.05, 0.25) * attempt)
    raise AssertionError("unreachable")


def key_condition(keys: Sequence[str]) -> str:
    """MERGE's match condition on ``keys`` (null-safe, so a null key part still matches itself), in the SQL
    that Spark and delta-rs both read."""
    return " AND ".join(f"(t.`{k}` IS NOT DISTINCT FROM s.`{k}`)" for k in keys)


@contextmanager
def idempotent_dml(spark: SparkSession, txn: tuple[str, int] | None) -> Iterator[None]:
    """Tag the DML statements inside with a Delta transaction id (skipped if already committed)."""
    if txn is None:
        yield
        return
    spark.conf.set("spark.databricks.delta.write.txnAppId", txn[0])
    spark.conf.set("spark.databricks.delta.write.txnVersion", str(txn[1]))
    try:
        yield
    finally:
        spark.conf.unset("spark.databricks.delta.write.txnAppId")
        spark.conf.unset("spark.databricks.delta.write.txnVersion")


def storage_options_for(path: str, storage_options: dict[str, str] | None = None) -> dict[str, str] | None:
    """The delta-rs options for ``path``: those given (``Settings.object_store_options()``, which the
    ``Lakehouse`` resource holds), or None for delta-rs's defaults. Nothing is read from the environment
    here: an object-store path read without its options reaches AWS itself, not a configured endpoint."""
    return storage_options or None


def open_delta(path: str, storage_options: dict[str, str] | None = None) -> RsDeltaTable:
    """A Delta table through delta-rs (no JVM); object-store paths get their storage options."""
    return RsDeltaTable(path, storage_options=storage_options_for(path, storage_options))


def delta_dataset(
    path: str, storage_options: dict[str, str] | None = None, table: RsDeltaTable | None = None
) -> ds.Dataset:
    """The table's current version as an Arrow dataset, read through one of Arrow's own filesystems.
    Through delta-rs's default (a Python filesystem handler, which Arrow's I/O threads call back into), a
    process that read a table aborted at exit in 12 of 30 runs here, local or S3 alike ("terminate called
    without an active exception", deltalake 1.6 / pyarrow 25)."""
    table = table or open_delta(path, storage_options)
    return table.to_pyarrow_dataset(
        filesystem=_arrow_filesystem(path, storage_options_for(path, storage_options))
    )


def _arrow_filesystem(path: str, storage_options: dict[str, str] | None) -> pafs.FileSystem | None:
    """Arrow's filesystem rooted at the table: local, or S3 with the same options delta-rs gets
    (credentials from the environment, as both read them); other stores keep delta-rs's handler."""
    root = local_path(path)
    if root is not None:
        return pafs.SubTreeFileSystem(str(root.resolve()), pafs.LocalFileSystem())
    if not is_s3(path):
        return None
    options = {key.lower(): value for key, value in (storage_options or {}).items()}
    s3 = pafs.S3FileSystem(
        access_key=options.get("aws_access_key_id"),
        secret_key=options.get("aws_secret_access_key"),
        session_token=options.get("aws_session_token"),
        region=options.get("aws_region") or None,
        endpoint_override=options.get("aws_endpoint") or options.get("aws_endpoint_url") or None,
    )
    return pafs.SubTreeFileSystem(path.split("://", 1)[1].rstrip("/"), s3)


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
    rows = delta_dataset(path, storage_options, table).count_rows()
    return TableInfo(name, path, table.version(), rows, updated)


def read_table(
    path: str,
    columns: list[str] | None = None,
    storage_options: dict[str, str] | None = None,
    where: pc.Expression | None = None,
) -> pa.Table:
    """Read a (small) Delta table into Arrow without Spark; ``where`` skips files by their statistics."""
    return delta_dataset(path, storage_options).to_table(columns=columns, filter=where)


def local_path(uri: str) -> Path | None:
    """The filesystem path of a local URI, or None for object storage."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    return Path(uri.removeprefix("file://"))
