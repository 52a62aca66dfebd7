"""Spark transformations for documents: landing zone → bronze (raw, as landed) → silver (clean).

Plain functions over DataFrames; the Dagster assets in ``assets.py`` only wire them to resources.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from assets.documents.parsing import parse_document
from assets.landing import LANDED_SCHEMA, AccessRuleError, access_groups, read_bytes

BRONZE_DOCUMENTS_SCHEMA = T.StructType(
    [
        T.StructField("document_id", T.StringType(), False),
        T.StructField("path", T.StringType(), False),
        T.StructField("media_type", T.StringType(), True),
        # What a text file was read as (utf-8, cp1252, utf-16-le ...); null for PDFs, unreadable files,
        # tombstones and rows written before the column existed (appends merge it into older tables).
        T.StructField("encoding", T.StringType(), True),
        T.StructField("size_bytes", T.LongType(), True),
        T.StructField("sha256", T.StringType(), True),
        T.StructField("modified_at", T.TimestampType(), True),
        T.StructField("title", T.StringType(), True),
        T.StructField("text", T.StringType(), True),
        T.StructField("parse_error", T.StringType(), True),
        T.StructField("is_deleted", T.BooleanType(), False),
        T.StructField("access_groups", T.ArrayType(T.StringType()), True),
    ]
)
LANDED_WITH_GROUPS = T.StructType(
    [
        *LANDED_SCHEMA.fields,
        T.StructField("access_groups", T.ArrayType(T.StringType()), True),
        T.StructField("access_error", T.StringType(), True),
    ]
)


# Silver documents' columns that are bronze's, unchanged (the rest are derived).
SILVER_FROM_BRONZE = [
    "document_id",
    "path",
    "title",
    "media_type",
    "text",
    "size_bytes",
    "sha256",
    "modified_at",
    "access_groups",
]


def document_id(relative_path: str) -> str:
    """Stable id of a document: derived from where it lives in the landing zone."""
    return hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:32]


def _parse_files(storage_options: Mapping[str, str] | None):
    """Read, hash and parse each listed file (runs in Spark's Python workers)."""

    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield _parse_batch(batch, storage_options)

    return parse


def _parse_batch(batch: pd.DataFrame, storage_options: Mapping[str, str] | None) -> pd.DataFrame:
    """One batch of listed files as bronze records."""
    rows = []
    for f in batch.itertuples(index=False):
        content = read_bytes(f.uri, storage_options)
        parsed = parse_document(f.path, content)
        rows.append(
            {
                "document_id": document_id(f.path),
                "path": f.path,
                "media_type": parsed.media_type,
                "encoding": parsed.encoding,
                "size_bytes": int(f.size_bytes),
                "sha256": hashlib.sha256(content).hexdigest(),
                "modified_at": f.modified_at,
                "title": parsed.title,
                "text": parsed.text,
                "parse_error": f.access_error or parsed.error,
                "is_deleted": False,
                "access_groups": f.access_groups,
            }
        )
    return pd.DataFrame(rows, columns=BRONZE_DOCUMENTS_SCHEMA.fieldNames())


def with_access_groups(landed: pd.DataFrame, rules: dict) -> pd.DataFrame:
    """Attach each file's access groups from the landing zone's rules (an unreadable rule is an error)."""
    groups, errors = [], []
    for path in landed["path"]:
        try:
            groups.append(access_groups(rules, path))
            errors.append(None)
        except AccessRuleError as exc:
            groups.append([])
            errors.append(str(exc))
    return landed.assign(access_groups=groups, access_error=errors)


def parse_landed_documents(
    spark: SparkSession,
    landed: pd.DataFrame,
    rules: dict,
    run_id: str,
    storage_options: Mapping[str, str] | None = None,
) -> DataFrame:
    """Bronze records for the given landed files: read, hashed and parsed in Spark's workers."""
    files = spark.createDataFrame(with_access_groups(landed, rules), LANDED_WITH_GROUPS)
    partitions = max(1, min(len(landed), spark.sparkContext.defaultParallelism))
    parse = _parse_files(storage_options)
    return _stamp(files.repartition(partitions).mapInPandas(parse, BRONZE_DOCUMENTS_SCHEMA), run_id)


def _stamp(records: DataFrame, run_id: str) -> DataFrame:
    return records.withColumns({"ingested_at": F.current_timestamp(), "run_id": F.lit(run_id)})


def latest_bronze(bronze: DataFrame) -> DataFrame:
    """The newest bronze record of each path (a deletion tombstone included); of a topic's events in one
    batch, the one at the highest offset."""
    order = [F.col("ingested_at").desc(), F.col("modified_at").desc_nulls_last()]
    if "_offset" in bronze.columns:
        order.append(F.col("_offset").desc_nulls_last())
    newest = Window.partitionBy("path").orderBy(*order)
    return bronze.withColumn("_rank", F.row_number().over(newest)).where("_rank = 1").drop("_rank")


def reconcile_landing(
    spark: SparkSession,
    landed: pd.DataFrame,
    bronze: DataFrame,
    rules: dict,
    run_id: str,
    storage_options: Mapping[str, str] | None = None,
) -> DataFrame:
    """Bronze records for what the file stream cannot see: files rewritten in place (same path, new size
    or modified time), files whose access rule changed, empty files, and tombstones for removed files.
    """
    if "_topic" in bronze.columns:  # a topic's documents are not in the landing zone, and not gone
        bronze = bronze.where(F.col("_topic").isNull())
    current = (
        latest_bronze(bronze)
        .where(~F.col("is_deleted"))
        .select("path", "size_bytes", "modified_at", "access_groups")
        .toPandas()
    )
    listed = with_access_groups(landed, rules)
    known = {
        (r.path, int(r.size_bytes), pd.Timestamp(r.modified_at), _groups(r.access_groups))
        for r in current.itertuples(index=False)
    }
    is_changed = [
        (r.path, int(r.size_bytes), pd.Timestamp(r.modified_at), _groups(r.access_groups)) not in known
        for r in listed.itertuples(index=False)
    ]
    # A boolean Series, not a list: an empty list would select no columns of an empty landing zone.
    changed = listed[pd.Series(is_changed, index=listed.index, dtype=bool)]
    gone = sorted(set(current["path"]) - set(listed["path"]))
    records = parse_landed_documents(
        spark, changed.drop(columns=["access_groups", "access_error"]), rules, run_id, storage_options
    )
    tombstones = spark.createDataFrame(
        [(document_id(p), p) for p in gone], "document_id string, path string"
    ).select(
        "document_id",
        "path",
        *[F.lit(None).cast(f.dataType).alias(f.name) for f in BRONZE_DOCUMENTS_SCHEMA.fields[2:-2]],
        F.lit(True).alias("is_deleted"),
        F.lit(None).cast("array<string>").alias("access_groups"),
    )
    return records.unionByName(_stamp(tombstones, run_id))


def _groups(groups) -> tuple[str, ...]:
    return () if groups is None else tuple(groups)


def split_silver_documents(
    latest: DataFrame, live_silver: DataFrame
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Split the newest bronze records of changed paths into (accepted, rejected, removed ids).

    Files that failed to parse are rejected with the parser's reason; a file whose bytes equal another
    live document's (or an earlier copy in the same batch) is rejected as a duplicate of that path, so
    each text is indexed once. ``removed`` holds the ids that must leave silver: deleted files and
    paths whose newest version was rejected.
    """
    live = latest.where(~F.col("is_deleted"))
    failed = live.where(F.col("parse_error").isNotNull()).withColumn("reason", F.col("parse_error"))
    parsed = live.where(F.col("parse_error").isNull())
    changed_ids = latest.select("document_id")
    others = live_silver.join(changed_ids, "document_id", "left_anti").select(
        "sha256", F.col("path").alias("_original")
    )
    copies_of_others = parsed.join(others.dropDuplicates(["sha256"]), "sha256", "inner")
    fresh = parsed.join(others.select("sha256").distinct(), "sha256", "left_anti")
    first_copy = Window.partitionBy("sha256").orderBy("modified_at", F.length("path"), "path")
    ranked = fresh.withColumn("_copy", F.row_number().over(first_copy)).withColumn(
        "_original", F.first("path").over(first_copy)
    )
    duplicates = (
        ranked.where("_copy > 1")
        .drop("_copy")
        .unionByName(copies_of_others)
        .withColumn("reason", F.concat(F.lit("duplicate: same content as "), F.col("_original")))
        .drop("_original")
    )
    accepted = ranked.where("_copy = 1").select(*SILVER_FROM_BRONZE, "ingested_at")
    provenance = [c for c in ("_topic", "_partition", "_offset") if c in latest.columns]
    rejected = failed.unionByName(duplicates).select(
        "document_id", "path", "sha256", "text", "reason", "run_id", "parse_error", *provenance
    )
    removed = (
        latest.where(F.col("is_deleted")).select("document_id").unionByName(rejected.select("document_id"))
    )
    return accepted, rejected, removed


# The same two rules over pandas frames, for a small increment applied in-process (no Spark job: a
# document event searchable in seconds). Each mirrors its Spark function above, which handles increments
# over ``small_increment_max_rows``; tests/test_small_increments.py runs both on the same changes.


def latest_bronze_rows(bronze: pd.DataFrame) -> pd.DataFrame:
    """``latest_bronze`` in pandas: the newest record of each path (newest ingest, then modification
    time, then a topic's offset; nulls last)."""
    order = ["ingested_at", "modified_at", *(["_offset"] if "_offset" in bronze.columns else [])]
    newest_first = bronze.sort_values(order, ascending=False, na_position="last", kind="stable")
    return newest_first.drop_duplicates("path", keep="first")


def split_silver_rows(
    latest: pd.DataFrame, live_silver: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """``split_silver_documents`` in pandas: (accepted, rejected, removed ids) of the newest records of
    changed paths; ``live_silver`` needs ``document_id``, ``sha256`` and ``path``."""
    live = latest[~latest["is_deleted"].astype(bool)]
    failed = live[live["parse_error"].notna()].assign(reason=lambda d: d["parse_error"])
    parsed = live[live["parse_error"].isna()]
    others = live_silver[~live_silver["document_id"].isin(latest["document_id"])]
    others = others[["sha256", "path"]].rename(columns={"path": "_original"})
    copies_of_others = parsed.merge(others.drop_duplicates("sha256"), on="sha256", how="inner")
    fresh = parsed[~parsed["sha256"].isin(others["sha256"])]
    ranked = fresh.assign(_length=fresh["path"].str.len()).sort_values(
        ["sha256", "modified_at", "_length", "path"], na_position="first", kind="stable"
    )
    by_content = ranked.groupby("sha256", dropna=False, sort=False)
    ranked = ranked.assign(_copy=by_content.cumcount() + 1, _original=by_content["path"].transform("first"))
    duplicates = pd.concat([ranked[ranked["_copy"] > 1], copies_of_others], ignore_index=True)
    duplicates = duplicates.assign(reason="duplicate: same content as " + duplicates["_original"].astype(str))
    accepted = ranked[ranked["_copy"] == 1][[*SILVER_FROM_BRONZE, "ingested_at"]]
    provenance = [c for c in ("_topic", "_partition", "_offset") if c in latest.columns]
    columns = ["document_id", "path", "sha256", "text", "reason", "run_id", "parse_error", *provenance]
    rejected = pd.concat([failed[columns], duplicates[columns]], ignore_index=True)
    removed = pd.concat(
        [latest[latest["is_deleted"].astype(bool)]["document_id"], rejected["document_id"]], ignore_index=True
    )
    return accepted.reset_index(drop=True), rejected, removed
