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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from assets.landing import LANDED_SCHEMA, read_bytes
from assets.structured.contracts import SourceContract

RAW_LIMIT = 4000
# A record longer than this is quarantined rather than parsed: it is a broken file (a missing newline or
# quote) far more often than real data, and one such line must not exhaust a worker's memory.
MAX_RECORD_BYTES = 1_000_000
csv.field_size_limit(MAX_RECORD_BYTES)
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
        # Column types as the file declared them (Parquet only), to catch a type change at the source.
        T.StructField("_file_types", T.MapType(T.StringType(), T.StringType()), True),
    ]
)
TOMBSTONE_FIELD = "_deleted"
TRUE_VALUES = ("true", "1", "yes", "y", "t")


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
            too_long = "field larger than field limit" in str(exc)
            yield (
                start,
                raw[:RAW_LIMIT],
                None,
                _too_long(len(raw)) if too_long else f"malformed CSV row: {exc}",
            )
            continue
        line = reader.line_num
        raw = "\n".join(lines[start - 1 : line])
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(raw) > MAX_RECORD_BYTES:
            yield start, raw[:RAW_LIMIT], None, _too_long(len(raw))
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


def _too_long(size: int) -> str:
    return f"record is {size:,} bytes, over the {MAX_RECORD_BYTES:,}-byte limit"


def parse_jsonl(content: bytes) -> Iterator[tuple[int, str, dict[str, str] | None, str | None]]:
    """(line, raw, record, error) for every non-blank line; values keep their JSON spelling as strings."""
    if not content.strip():
        yield 0, "", None, "empty file"
        return
    for number, raw_bytes in enumerate(content.splitlines(), start=1):
        if not raw_bytes.strip():
            continue
        if len(raw_bytes) > MAX_RECORD_BYTES:
            yield number, raw_bytes[:RAW_LIMIT].decode("utf-8", "replace"), None, _too_long(len(raw_bytes))
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


def parse_parquet(
    content: bytes,
) -> tuple[dict[str, str], Iterator[tuple[int, str, dict | None, str | None]]]:
    """(file column types, rows) of a Parquet file; every value keeps its string form, like the text
    formats, and ``line`` is the row's position (1-based). A corrupt file is one error row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not content:
        return {}, iter([(0, "", None, "empty file")])
    try:
        table = pq.read_table(pa.BufferReader(content))
    except (pa.ArrowInvalid, OSError) as exc:
        return {}, iter([(0, "", None, f"unreadable Parquet file: {exc}")])
    types = {f.name: str(f.type) for f in table.schema}

    def rows() -> Iterator[tuple[int, str, dict | None, str | None]]:
        for number, row in enumerate(table.to_pylist(), start=1):
            record = {
                k: (None if v is None else v if isinstance(v, str) else _plain(v)) for k, v in row.items()
            }
            yield number, json.dumps(record, default=str)[:RAW_LIMIT], record, None

    return types, rows()


def _plain(value: object) -> str:
    """A Parquet value's string form as a cast in Spark SQL reads it back (ISO dates, plain numbers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    return str(value)


def _parse_files(fmt: str, storage_options: Mapping[str, str] | None):
    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = []
            for uri, path, size, modified in batch[["uri", "path", "size_bytes", "modified_at"]].itertuples(
                index=False
            ):
                content = read_bytes(uri, storage_options)
                sha = hashlib.sha256(content).hexdigest()
                if fmt == "parquet":
                    types, parsed = parse_parquet(content)
                else:
                    types, parsed = None, (parse_csv if fmt == "csv" else parse_jsonl)(content)
                for line, raw, record, error in parsed:
                    rows.append((path, line, raw, record, error, sha, int(size), modified, types))
            yield pd.DataFrame(rows, columns=BRONZE_RECORD_SCHEMA.fieldNames())

    return parse


def parse_landed_records(
    spark: SparkSession,
    contract: SourceContract,
    landed: pd.DataFrame,
    storage_options: Mapping[str, str] | None = None,
) -> DataFrame:
    """Bronze records of the given landed files, read and parsed in Spark's Python workers."""
    files = spark.createDataFrame(landed, LANDED_SCHEMA)
    partitions = max(1, min(len(landed), spark.sparkContext.defaultParallelism))
    parse = _parse_files(contract.format, storage_options)
    return files.repartition(partitions).mapInPandas(parse, BRONZE_RECORD_SCHEMA)


def unseen_files(landed: pd.DataFrame, bronze: DataFrame) -> pd.DataFrame:
    """Listed files with no bronze record of the same path, size and modified time (empty files and
    files rewritten in place, which the file stream does not hand over)."""
    seen = {
        (r["_source_file"], int(r["_file_size"]), pd.Timestamp(r["_file_modified_at"]))
        for r in bronze.select("_source_file", "_file_size", "_file_modified_at").distinct().collect()
    }
    keep = [
        (r.path, int(r.size_bytes), pd.Timestamp(r.modified_at)) not in seen
        for r in landed.itertuples(index=False)
    ]
    return landed[keep]


# Arrow types (as str()) a contract type accepts from a Parquet file without loss.
_COMPATIBLE = {
    "string": ("string", "large_string"),
    "int": ("int8", "int16", "int32", "uint8", "uint16"),
    "long": ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"),
    "double": ("float", "double", "halffloat", "int8", "int16", "int32", "int64"),
    "boolean": ("bool",),
    "date": ("date32[day]", "date64[ms]"),
    "timestamp": ("timestamp", "date32[day]"),
    "decimal": ("decimal", "int8", "int16", "int32", "int64"),
}


def type_change(contract_type: str, arrow_type: str) -> bool:
    """Whether a Parquet column's type is not one the contract's type accepts."""
    return not any(arrow_type.startswith(a) for a in _compatible(contract_type))


def _compatible(contract_type: str) -> tuple[str, ...]:
    return _COMPATIBLE["decimal" if contract_type.startswith("decimal") else contract_type]


def is_tombstone() -> Column:
    """A record whose ``_deleted`` field is true deletes its key (it needs only the key and event time)."""
    return F.coalesce(F.lower(F.col("record").getItem(TOMBSTONE_FIELD)).isin(*TRUE_VALUES), F.lit(False))


def type_records(bronze: DataFrame, contract: SourceContract) -> DataFrame:
    """Apply the contract: typed columns, ``_tombstone``, and a ``reason`` that is null for a valid row.

    Beyond values, a row is rejected for schema drift: a column the contract does not declare (when the
    source's policy is ``reject``; with ``add`` it is kept, see ``drift_columns``) or a column whose type
    in the landed Parquet file is not the contract's.
    """
    typed = {c.name: F.expr(f"try_cast(record['{c.name}'] AS {c.type})") for c in contract.columns}
    tombstone = is_tombstone()
    keys = {*contract.primary_key, *([contract.event_time] if contract.event_time else [])}
    problems = []
    if contract.schema_drift == "reject":
        known = F.array(*[F.lit(c) for c in [*contract.column_names, TOMBSTONE_FIELD]])
        unexpected = F.array_except(F.map_keys(F.col("record")), known)
        problems.append(
            F.when(
                F.size(unexpected) > 0,
                F.concat(
                    F.lit("schema drift: unexpected column(s) "),
                    F.array_join(F.array_sort(unexpected), ", "),
                    F.lit(" (the source's policy is reject)"),
                ),
            )
        )
    # Only Parquet files declare column types; a topic's bronze has no such column.
    file_types = (
        F.col("_file_types") if "_file_types" in bronze.columns else F.lit(None).cast("map<string,string>")
    )
    for c in contract.columns:
        raw = F.col("record").getItem(c.name)
        file_type = file_types.getItem(c.name)
        accepted = F.lit(False)
        for prefix in _compatible(c.type):
            accepted = accepted | file_type.startswith(prefix)
        problems.append(
            F.when(
                file_type.isNotNull() & ~accepted,
                F.concat(
                    F.lit(f"type change: column '{c.name}' arrived as "),
                    file_type,
                    F.lit(f", the contract says {c.type}"),
                ),
            )
        )
        if c.required:
            missing = raw.isNull() if c.name in keys else raw.isNull() & ~tombstone
            problems.append(F.when(missing, F.lit(f"missing required field '{c.name}'")))
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
        "*",
        *[typed[c.name].alias(c.name) for c in contract.columns],
        tombstone.alias("_tombstone"),
        reason.alias("reason"),
    )


def drift_columns(records: DataFrame, contract: SourceContract) -> list[str]:
    """Columns landed records carry beyond the contract (kept as strings when the policy is ``add``)."""
    if contract.schema_drift != "add":
        return []
    known = {*contract.column_names, TOMBSTONE_FIELD}
    found = records.select(F.explode(F.map_keys("record")).alias("k")).distinct().collect()
    return sorted(r["k"] for r in found if r["k"] not in known)


def duplicate_files(changes: DataFrame, bronze: DataFrame) -> DataFrame:
    """(_source_file, reason) for files whose bytes equal a file landed earlier under another path.

    The original is the earliest by file modified time, then path, so the choice is stable across runs.
    """
    files = (
        bronze.where(F.col("_error").isNull() & F.col("_file_sha256").isNotNull())
        .select("_source_file", "_file_sha256", "_file_modified_at")
        .distinct()
    )
    first = Window.partitionBy("_file_sha256").orderBy("_file_modified_at", "_source_file")
    ranked = files.withColumn("_original", F.first("_source_file").over(first))
    copies = ranked.where(F.col("_original") != F.col("_source_file"))
    return (
        copies.join(changes.select("_source_file").distinct(), "_source_file", "left_semi")
        .select(
            "_source_file",
            F.concat(F.lit("duplicate file: same bytes as "), F.col("_original")).alias("_duplicate_of"),
        )
        .dropDuplicates(["_source_file"])
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


@dataclass
class SilverBatch:
    """What one batch of new bronze records does to a silver table, and how its rows are accounted for."""

    changes: DataFrame  # rows for one MERGE: upserts, and ``_delete`` for tombstones
    rejected: DataFrame  # rows with a ``reason`` (``_duplicate`` marks a duplicate file's rows)
    superseded: DataFrame  # valid rows beaten by a later version of their key (in the batch or silver)
    typed: DataFrame  # every record typed and checked, cached: the three frames above read it

    def unpersist(self) -> None:
        self.typed.unpersist()


def split_silver_records(
    records: DataFrame,
    contract: SourceContract,
    referenced: dict[str, DataFrame] | None = None,
    silver: DataFrame | None = None,
    duplicates: DataFrame | None = None,
) -> SilverBatch:
    """Apply new bronze ``records`` to silver: one row per primary key, the latest event time winning.

    ``referenced`` maps a referenced source's name to its silver table, for foreign-key checks;
    ``silver`` is the current silver table, so an older version of a key arriving late does not
    overwrite a newer one; ``duplicates`` (from ``duplicate_files``) rejects re-landed copies.
    Superseded rows are earlier versions of a key (or exact re-deliveries); they are counted, not lost:
    bronze keeps them.
    """
    typed = check_references(type_records(records, contract), contract, referenced or {})
    if duplicates is not None:
        typed = typed.join(duplicates, "_source_file", "left").withColumns(
            {
                "reason": F.coalesce(F.col("reason"), F.col("_duplicate_of")),
                "_duplicate": F.col("_duplicate_of").isNotNull() & F.col("_error").isNull(),
            }
        )
    else:
        typed = typed.withColumn("_duplicate", F.lit(False))
    # Typing, reference and duplicate checks run once for the MERGE, the quarantine and the counts.
    typed = typed.cache()
    valid = typed.where(F.col("reason").isNull())
    rejected = typed.where(F.col("reason").isNotNull())
    order = [F.col(contract.event_time).desc_nulls_last()] if contract.event_time else []
    order += [F.col("_ingested_at").desc(), *(F.col(c).desc_nulls_last() for c in contract.provenance)]
    latest_first = Window.partitionBy(*contract.primary_key).orderBy(*order)
    ranked = valid.withColumn("_rank", F.row_number().over(latest_first))
    winners = ranked.where("_rank = 1")
    superseded = ranked.where("_rank > 1")
    if silver is not None and contract.event_time:
        current = silver.select(
            *[F.col(k).alias(f"_cur_{k}") for k in contract.primary_key],
            F.col(contract.event_time).alias("_cur_event_time"),
        )
        on = [F.col(k) == F.col(f"_cur_{k}") for k in contract.primary_key]
        joined = winners.join(current, on, "left")
        stale = F.col("_cur_event_time").isNotNull() & (F.col(contract.event_time) < F.col("_cur_event_time"))
        superseded = superseded.unionByName(joined.where(stale).select(*winners.columns))
        winners = joined.where(~stale).select(*winners.columns)
    extra = [c for c in records.columns if c.startswith("_drift_")]
    changes = winners.select(
        *contract.column_names,
        *[F.col(c).alias(c.removeprefix("_drift_")) for c in extra],
        *contract.provenance,
        F.col("_ingested_at").alias("_bronze_ingested_at"),
        F.col("_tombstone").alias("_delete"),
    )
    return SilverBatch(changes, rejected, superseded, typed)
