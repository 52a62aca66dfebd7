"""Kafka messages → bronze records: the topic counterpart of the landed-file parsers in ``transform.py``.

A message becomes one bronze record in the same shape as a file's line (a string map, the raw text, an
error), so the same contract typing, quarantine and silver MERGE apply; its provenance is the topic,
partition, offset, Kafka timestamp and key instead of a file and line. The message key is the record's
primary key (its value for a one-column key, a JSON object of the key columns otherwise); a tombstone
(a key with a null value) deletes that key, as ``_deleted: true`` does in a file. Nothing is dropped: a
message that cannot become a record is one with its reason, for the quarantine.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from assets.structured.transform import MAX_RECORD_BYTES, RAW_LIMIT, TOMBSTONE_FIELD, _too_long
from resources.kafka import checkpoint_offsets, source_lag

__all__ = ["checkpoint_offsets"]  # kept importable from here: the checkpoint of a topic's bronze

KAFKA_RECORD_SCHEMA = T.StructType(
    [
        T.StructField("_topic", T.StringType(), False),
        T.StructField("_partition", T.IntegerType(), False),
        T.StructField("_offset", T.LongType(), False),
        T.StructField("_kafka_timestamp", T.TimestampType(), True),
        T.StructField("_key", T.StringType(), True),
        T.StructField("_raw", T.StringType(), True),
        T.StructField("record", T.MapType(T.StringType(), T.StringType()), True),
        T.StructField("_error", T.StringType(), True),
    ]
)


def _text(data: bytes | None, what: str) -> tuple[str | None, str | None]:
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"{what} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}"


def key_fields(key: str, primary_key: list[str]) -> dict[str, str] | str:
    """The primary-key columns a message key names, or why it names none."""
    if len(primary_key) == 1:
        return {primary_key[0]: key}
    try:
        value = json.loads(key)
    except json.JSONDecodeError:
        return f"message key is not a JSON object of the key columns {primary_key}"
    if not isinstance(value, dict) or any(value.get(k) is None for k in primary_key):
        return f"message key does not name every key column {primary_key}"
    return {k: str(value[k]) for k in primary_key}


def parse_message(
    key: bytes | None, value: bytes | None, primary_key: list[str]
) -> tuple[str | None, str | None, dict[str, str] | None, str | None]:
    """(key, raw, record, error) of one message; values keep their JSON spelling as strings."""
    key_text, error = _text(key, "message key")
    if error:
        return None, None, None, error
    if value is not None and len(value) > MAX_RECORD_BYTES:
        return key_text, value[:RAW_LIMIT].decode("utf-8", "replace"), None, _too_long(len(value))
    raw, error = _text(value, "message value")
    if error:
        return key_text, value[:RAW_LIMIT].decode("utf-8", "replace"), None, error
    if key_text is None:
        return None, raw and raw[:RAW_LIMIT], None, "message has no key (the key is the primary key)"
    keys = key_fields(key_text, primary_key)
    if isinstance(keys, str):
        return key_text, raw and raw[:RAW_LIMIT], None, keys
    if raw is None:  # a tombstone
        return key_text, None, {**keys, TOMBSTONE_FIELD: "true"}, None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        return key_text, raw[:RAW_LIMIT], None, f"invalid JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(parsed, dict):
        return (
            key_text,
            raw[:RAW_LIMIT],
            None,
            f"message value is a JSON {type(parsed).__name__}, not an object",
        )
    record = {k: (v if isinstance(v, str) or v is None else json.dumps(v)) for k, v in parsed.items()}
    for column, expected in keys.items():
        if record.get(column) is None:
            record[column] = expected
        elif record[column] != expected:
            return (
                key_text,
                raw[:RAW_LIMIT],
                None,
                f"message key names {column}={expected!r} but the value has {record[column]!r}",
            )
    return key_text, raw[:RAW_LIMIT], record, None


def kafka_messages(batch: pd.DataFrame) -> Iterator[tuple]:
    """Spark's Kafka rows in a pandas batch as (topic, partition, offset, timestamp, key, value), the key
    and value as bytes or None (pandas gives a null as None or NaN): what every topic parser reads."""
    for topic, partition, offset, timestamp, key, value in batch[
        ["topic", "partition", "offset", "timestamp", "key", "value"]
    ].itertuples(index=False):
        key = None if key is None or (isinstance(key, float) and pd.isna(key)) else bytes(key)
        value = None if value is None or (isinstance(value, float) and pd.isna(value)) else bytes(value)
        yield topic, int(partition), int(offset), timestamp, key, value


def _parse_messages(primary_key: list[str]):
    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = []
            for topic, partition, offset, timestamp, key, value in kafka_messages(batch):
                key_text, raw, record, error = parse_message(key, value, primary_key)
                rows.append((topic, partition, offset, timestamp, key_text, raw, record, error))
            yield pd.DataFrame(rows, columns=KAFKA_RECORD_SCHEMA.fieldNames())

    return parse


def parse_kafka_records(messages: DataFrame, primary_key: list[str]) -> DataFrame:
    """Spark's Kafka rows (key, value, topic, partition, offset, timestamp) → one bronze record each."""
    columns = messages.select("topic", "partition", "offset", "timestamp", "key", "value")
    return columns.mapInPandas(_parse_messages(primary_key), KAFKA_RECORD_SCHEMA)


def ingest_topic(
    session,
    lakehouse,
    contract,
    topic: str,
    bootstrap: str,
    options: dict[str, str],
    run_id: str,
    ingest_day: str,
    max_offsets_per_batch: int = 10_000,
) -> int:
    """Stream the messages of ``topic`` published since the last call into ``bronze_<source>``, exactly once
    (``stream_topic``), as records of the source's contract under ``ingest_day``. Returns the batches run."""
    from assets.structured.assets import INGEST_DATE

    bronze_name = f"bronze_{contract.name}"

    def to_records(messages: DataFrame) -> DataFrame:
        return stamp_records(parse_kafka_records(messages, contract.primary_key), run_id, ingest_day)

    return stream_topic(
        session,
        lakehouse,
        bronze_name,
        lakehouse.checkpoint_path(bronze_name),
        topic,
        bootstrap,
        options,
        to_records,
        max_offsets_per_batch,
        partition_by=[INGEST_DATE],
    )


def stream_topic(
    session,
    lakehouse,
    table: str,
    checkpoint: str,
    topic: str,
    bootstrap: str,
    options: dict[str, str],
    to_records: Callable[[DataFrame], DataFrame],
    max_offsets_per_batch: int = 10_000,
    partition_by: list[str] | None = None,
) -> int:
    """Append the messages of ``topic`` published since the checkpoint to ``table``, exactly once, as
    ``to_records`` makes them: the one way a topic is read (record sources and document events alike).

    A ``trigger(availableNow=True)`` query from the checkpoint's offsets to the topic's end; each
    micro-batch is appended with the Delta transaction id (checkpoint id, batch id), so a batch replayed
    after a crash between the Delta commit and the checkpoint's commit is skipped, not appended twice.
    Before reading, a gap between the checkpoint's offsets and what the topic still stores stops the run
    with the lost range (``OffsetsLost``). Returns the batches run.
    """
    from pathlib import Path

    from assets.landing import stream_app_id
    from resources.kafka import check_offsets_available, spark_options, watermarks

    if (Path(checkpoint) / "offsets").exists():
        processed = checkpoint_offsets(checkpoint, topic)
        check_offsets_available(topic, watermarks(bootstrap, topic, options), processed)
    batches = []

    def ingest(messages: DataFrame, batch_id: int) -> None:
        txn = (stream_app_id(checkpoint), batch_id)
        lakehouse.append(to_records(messages), table, txn=txn, partition_by=partition_by or ())
        batches.append(batch_id)

    query = (
        session.readStream.format("kafka")
        .options(**spark_options(bootstrap, options))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", max_offsets_per_batch)
        .option("failOnDataLoss", "true")
        .load()
        .writeStream.foreachBatch(ingest)
        .option("checkpointLocation", checkpoint)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    if query.exception() is not None:
        raise query.exception()
    return len(batches)


def stamp_records(records: DataFrame, run_id: str, ingest_day: str) -> DataFrame:
    """Bronze's own columns on parsed records: when, by which run, under which ingest day."""
    from pyspark.sql import functions as F

    from assets.structured.assets import INGEST_DATE

    return records.withColumns(
        {
            "_ingested_at": F.current_timestamp(),
            "_run_id": F.lit(run_id),
            INGEST_DATE: F.lit(ingest_day).cast("date"),
        }
    )


def topic_lag(lakehouse, contract, bootstrap: str, options: dict[str, str]) -> dict[int, int] | None:
    """Per partition of the source's topic: messages published and not yet in bronze. None when the
    topic does not exist (yet)."""
    checkpoint = lakehouse.checkpoint_path(f"bronze_{contract.name}")
    return source_lag(bootstrap, options, contract.topic, checkpoint)


def lag_metadata(topic: str, lag: dict[int, int] | None) -> dict[str, object]:
    """Consumer lag as materialization metadata: per ``topic/partition`` and in total."""
    per_partition = {f"{topic}/{p}": n for p, n in sorted((lag or {}).items())}
    return {"consumer_lag": per_partition, "consumer_lag_total": sum(per_partition.values())}


def tombstone_event_time(records: DataFrame, contract) -> DataFrame:
    """A tombstone carries only its key: its event time is the message's Kafka timestamp, so it wins
    over the versions of its key published before it (and loses to later ones)."""
    from pyspark.sql import functions as F

    from assets.structured.transform import is_tombstone

    if not contract.event_time:
        return records
    event_time = F.col("record").getItem(contract.event_time)
    stamped = F.map_concat(
        F.col("record"), F.create_map(F.lit(contract.event_time), F.col("_kafka_timestamp").cast("string"))
    )
    fill = is_tombstone() & event_time.isNull() & F.col("_kafka_timestamp").isNotNull()
    return records.withColumn("record", F.when(fill, stamped).otherwise(F.col("record")))
