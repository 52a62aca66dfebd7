"""Spark transformations for structured sources: landed files → bronze records → typed silver rows.

Bronze keeps every record as landed (a string map, its file, line and raw text), so nothing is lost
and a contract change never needs a re-landing. Silver applies the source's contract: typed columns,
required fields, latest event time per primary key; rows that fail carry a reason to the quarantine.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from assets.landing import LANDED_SCHEMA, read_bytes
from assets.structured.contracts import SourceContract

RAW_LIMIT = 4000
BRONZE_RECORD_SCHEMA = T.StructType(
    [
        T.StructField("_source_file", T.StringType(), False),
        T.StructField("_line", T.LongType(), True),
        T.StructField("_raw", T.StringType(), True),
        T.StructField("record", T.MapType(T.StringType(), T.StringType()), True),
        T.StructField("_error", T.StringType(), True),
        T.StructField("_file_sha256", T.StringType(), True),
        T.StructField("_file_size", T.LongType(), True),
        T.StructField("_file_modified_at", T.TimestampType(), True),
    ]
)


def parse_csv(content: bytes) -> Iterator[tuple[int, str, dict[str, str] | None, str | None]]:
    """(line, raw, record, error) for every data row; a row whose field count is off is an error."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield (
            1,
            content[:RAW_LIMIT].decode("utf-8", "replace"),
            None,
            (f"file is not valid UTF-8: byte 0x{content[exc.start]:02x} at offset {exc.start}"),
        )
        return
    if not text.strip():
        yield 0, "", None, "empty file"
        return
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    lines = text.splitlines()
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as exc:
        yield 1, lines[0][:RAW_LIMIT], None, f"unreadable CSV header: {exc}"
        return
    line = reader.line_num
    while True:
        start = line + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num
            raw = "\n".join(lines[start - 1 : line])
            yield start, raw[:RAW_LIMIT], None, f"malformed CSV row: {exc}"
            continue
        line = reader.line_num
        raw = "\n".join(lines[start - 1 : line])
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            yield (
                start,
                raw[:RAW_LIMIT],
                None,
                (f"malformed CSV row: {len(fields)} fields where the header has {len(header)}"),
            )
            continue
        yield (
            start,
            raw[:RAW_LIMIT],
            {h: (v if v != "" else None) for h, v in zip(header, fields, strict=True)},
            None,
        )


def parse_jsonl(content: bytes) -> Iterator[tuple[int, str, dict[str, str] | None, str | None]]:
    """(line, raw, record, error) for every non-blank line; values keep their JSON spelling as strings."""
    if not content.strip():
        yield 0, "", None, "empty file"
        return
    for number, raw_bytes in enumerate(content.splitlines(), start=1):
        if not raw_bytes.strip():
            continue
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield (
                number,
                raw_bytes[:RAW_LIMIT].decode("utf-8", "replace"),
                None,
                (f"line is not valid UTF-8: byte 0x{raw_bytes[exc.start]:02x} at offset {exc.start}"),
            )
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield number, raw[:RAW_LIMIT], None, f"invalid JSON: {exc.msg} at column {exc.colno}"
            continue
        if not isinstance(value, dict):
            yield number, raw[:RAW_LIMIT], None, f"JSON line is a {type(value).__name__}, not an object"
            continue
        record = {k: (v if isinstance(v, str) or v is None else json.dumps(v)) for k, v in value.items()}
        yield number, raw[:RAW_LIMIT], record, None


PARSERS = {"csv": parse_csv, "jsonl": parse_jsonl}


def _parse_files(fmt: str):
    parser = PARSERS[fmt]

    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = []
            for uri, path, size, modified in batch[["uri", "path", "size_bytes", "modified_at"]].itertuples(
                index=False
            ):
                content = read_bytes(uri)
                sha = hashlib.sha256(content).hexdigest()
                for line, raw, record, error in parser(content):
                    rows.append((path, line, raw, record, error, sha, int(size), modified))
            yield pd.DataFrame(rows, columns=BRONZE_RECORD_SCHEMA.fieldNames())

    return parse


def read_landed_records(
    spark: SparkSession, contract: SourceContract, landed: pd.DataFrame, known_files: DataFrame | None
) -> DataFrame:
    """Bronze records of the listed files not yet ingested (same path, size and modified time)."""
    listed = spark.createDataFrame(landed, LANDED_SCHEMA)
    if known_files is not None:
        seen = known_files.select(
            F.col("_source_file").alias("path"),
            F.col("_file_size").alias("size_bytes"),
            F.col("_file_modified_at").alias("modified_at"),
        ).distinct()
        listed = listed.join(seen, ["path", "size_bytes", "modified_at"], "left_anti")
    if contract.format == "parquet":
        return _parquet_records(spark, listed)
    return listed.repartition(max(1, min(len(landed), spark.sparkContext.defaultParallelism))).mapInPandas(
        _parse_files(contract.format), BRONZE_RECORD_SCHEMA
    )


def _parquet_records(spark: SparkSession, listed: DataFrame) -> DataFrame:
    """Parquet is read by Spark itself; every value is kept as its string form, like the text formats."""
    frames = []
    for f in listed.collect():
        if f["size_bytes"] == 0:
            frames.append(
                spark.createDataFrame(
                    [(f["path"], 0, "", None, "empty file", None, 0, f["modified_at"])], BRONZE_RECORD_SCHEMA
                )
            )
            continue
        df = spark.read.parquet(f["uri"])
        record = F.create_map(*[x for c in df.columns for x in (F.lit(c), F.col(f"`{c}`").cast("string"))])
        frames.append(
            df.select(
                F.lit(f["path"]).alias("_source_file"),
                F.lit(None).cast("long").alias("_line"),
                F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns])).alias("_raw"),
                record.alias("record"),
                F.lit(None).cast("string").alias("_error"),
                F.lit(None).cast("string").alias("_file_sha256"),
                F.lit(f["size_bytes"]).cast("long").alias("_file_size"),
                F.lit(f["modified_at"]).cast("timestamp").alias("_file_modified_at"),
            )
        )
    if not frames:
        return spark.createDataFrame([], BRONZE_RECORD_SCHEMA)
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def type_records(bronze: DataFrame, contract: SourceContract) -> DataFrame:
    """Apply the contract: typed columns plus a ``reason`` that is null for a valid row."""
    typed = {c.name: F.expr(f"try_cast(record['{c.name}'] AS {c.type})") for c in contract.columns}
    problems = []
    for c in contract.columns:
        raw = F.col("record").getItem(c.name)
        if c.required:
            problems.append(F.when(raw.isNull(), F.lit(f"missing required field '{c.name}'")))
        if c.allowed is not None:
            allowed = ", ".join(c.allowed)
            problems.append(
                F.when(
                    typed[c.name].isNotNull() & ~typed[c.name].isin(c.allowed),
                    F.concat(
                        F.lit(f"column '{c.name}': "),
                        F.substring(raw, 1, 80),
                        F.lit(f" is not one of {allowed}"),
                    ),
                )
            )
        for bound, fails in (("min", typed[c.name] < F.lit(c.min)), ("max", typed[c.name] > F.lit(c.max))):
            limit = getattr(c, bound)
            if limit is not None:
                word = "below the minimum" if bound == "min" else "above the maximum"
                problems.append(
                    F.when(
                        fails, F.concat(F.lit(f"column '{c.name}': "), raw, F.lit(f" is {word} {limit:g}"))
                    )
                )
        problems.append(
            F.when(
                raw.isNotNull() & typed[c.name].isNull(),
                F.concat(
                    F.lit(f"column '{c.name}': "), F.substring(raw, 1, 80), F.lit(f" is not a valid {c.type}")
                ),
            )
        )
    reasons = F.array_compact(F.array(*problems))
    reason = F.coalesce(F.col("_error"), F.when(F.size(reasons) > 0, F.array_join(reasons, "; ")))
    return bronze.select(
        "*", *[typed[c.name].alias(c.name) for c in contract.columns], reason.alias("reason")
    )


def protect_pii(df: DataFrame, contract: SourceContract, key: bytes) -> DataFrame:
    """Tokenise PII columns with a keyed hash and redact PII inside free-text columns."""
    from assets.chunks.redaction import redact, tokenize_pii

    token = F.udf(lambda value: tokenize_pii(value, key), T.StringType())
    scrub = F.udf(lambda value: None if value is None else redact(value).text, T.StringType())
    for column in contract.columns:
        if column.pii == "token":
            df = df.withColumn(column.name, token(F.col(column.name)))
        elif column.pii == "redact":
            df = df.withColumn(column.name, scrub(F.col(column.name)))
    return df


def check_references(
    typed: DataFrame, contract: SourceContract, referenced: dict[str, DataFrame]
) -> DataFrame:
    """Add a reason to rows whose foreign key names no row of the referenced silver table."""
    for i, ref in enumerate(contract.references):
        if ref.source not in referenced:
            continue
        flag, key = f"_ref_found_{i}", f"_ref_key_{i}"
        keys = (
            referenced[ref.source].select(F.col(ref.key).alias(key)).distinct().withColumn(flag, F.lit(True))
        )
        typed = typed.join(keys, F.col(ref.column) == F.col(key), "left")
        missing = F.concat(
            F.lit(f"column '{ref.column}': "),
            F.col(ref.column).cast("string"),
            F.lit(f" not found in {ref.source}.{ref.key}"),
        )
        broken = F.col(ref.column).isNotNull() & F.col(flag).isNull()
        reason = F.when(broken, F.concat_ws("; ", F.col("reason"), missing)).otherwise(F.col("reason"))
        typed = typed.withColumn("reason", reason).drop(flag, key)
    return typed


def split_silver_records(
    bronze: DataFrame, contract: SourceContract, referenced: dict[str, DataFrame] | None = None
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(accepted, rejected, superseded): one row per primary key, the latest event time winning.

    ``referenced`` maps a referenced source's name to its silver table, for foreign-key checks.
    Superseded rows are earlier versions of a key (or exact re-deliveries); they are counted, not lost:
    bronze keeps them.
    """
    typed = check_references(type_records(bronze, contract), contract, referenced or {})
    valid = typed.where(F.col("reason").isNull())
    rejected = typed.where(F.col("reason").isNotNull())
    order = [F.col(contract.event_time).desc_nulls_last()] if contract.event_time else []
    order += [F.col("_ingested_at").desc(), F.col("_source_file").desc(), F.col("_line").desc_nulls_last()]
    latest_first = Window.partitionBy(*contract.primary_key).orderBy(*order)
    ranked = valid.withColumn("_rank", F.row_number().over(latest_first))
    accepted = ranked.where("_rank = 1").select(
        *contract.column_names,
        "_source_file",
        "_line",
        F.col("_ingested_at").alias("_bronze_ingested_at"),
    )
    superseded = ranked.where("_rank > 1")
    return accepted, rejected, superseded
