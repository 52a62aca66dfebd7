"""Spark transformations for documents: landing zone → bronze (raw, as landed) → silver (clean).

Plain functions over DataFrames; the Dagster assets in ``assets.py`` only wire them to resources.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from assets.documents.parsing import parse_document
from assets.landing import LANDED_SCHEMA, read_bytes

BRONZE_DOCUMENTS_SCHEMA = T.StructType(
    [
        T.StructField("document_id", T.StringType(), False),
        T.StructField("path", T.StringType(), False),
        T.StructField("media_type", T.StringType(), True),
        T.StructField("size_bytes", T.LongType(), True),
        T.StructField("sha256", T.StringType(), True),
        T.StructField("modified_at", T.TimestampType(), True),
        T.StructField("title", T.StringType(), True),
        T.StructField("text", T.StringType(), True),
        T.StructField("parse_error", T.StringType(), True),
        T.StructField("is_deleted", T.BooleanType(), False),
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
]


def document_id(relative_path: str) -> str:
    """Stable id of a document: derived from where it lives in the landing zone."""
    return hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:32]


def _parse_files(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Read, hash and parse each listed file (runs in Spark's Python workers)."""
    for batch in batches:
        rows = []
        for uri, path, size, modified_at in batch[["uri", "path", "size_bytes", "modified_at"]].itertuples(
            index=False
        ):
            content = read_bytes(uri)
            parsed = parse_document(path, content)
            rows.append(
                {
                    "document_id": document_id(path),
                    "path": path,
                    "media_type": parsed.media_type,
                    "size_bytes": int(size),
                    "sha256": hashlib.sha256(content).hexdigest(),
                    "modified_at": modified_at,
                    "title": parsed.title,
                    "text": parsed.text,
                    "parse_error": parsed.error,
                    "is_deleted": False,
                }
            )
        yield pd.DataFrame(rows, columns=BRONZE_DOCUMENTS_SCHEMA.fieldNames())


def latest_bronze(bronze: DataFrame) -> DataFrame:
    """The newest bronze record of each path (a deletion tombstone included)."""
    newest = Window.partitionBy("path").orderBy(
        F.col("ingested_at").desc(), F.col("modified_at").desc_nulls_last()
    )
    return bronze.withColumn("_rank", F.row_number().over(newest)).where("_rank = 1").drop("_rank")


def new_bronze_documents(
    spark: SparkSession, landed: pd.DataFrame, bronze: DataFrame | None, run_id: str
) -> DataFrame:
    """Bronze records for files new or changed (path, size, mtime) since the last run, and tombstones
    for files gone. Unchanged files are not read at all.
    """
    listed = spark.createDataFrame(landed, LANDED_SCHEMA)
    if bronze is not None:
        current = (
            latest_bronze(bronze).where(~F.col("is_deleted")).select("path", "size_bytes", "modified_at")
        )
        changed = listed.join(current, ["path", "size_bytes", "modified_at"], "left_anti")
        gone = current.select("path").join(listed.select("path"), "path", "left_anti")
    else:
        changed = listed
        gone = spark.createDataFrame([], "path string")
    parsed = changed.repartition(max(1, min(len(landed), spark.sparkContext.defaultParallelism))).mapInPandas(
        _parse_files, BRONZE_DOCUMENTS_SCHEMA
    )
    tombstones = gone.select(
        _document_id_udf(F.col("path")).alias("document_id"),
        "path",
        *[F.lit(None).cast(f.dataType).alias(f.name) for f in BRONZE_DOCUMENTS_SCHEMA.fields[2:-1]],
        F.lit(True).alias("is_deleted"),
    )
    return parsed.unionByName(tombstones).withColumns(
        {"ingested_at": F.current_timestamp(), "run_id": F.lit(run_id)}
    )


_document_id_udf = F.udf(lambda path: document_id(path), T.StringType())


def split_silver_documents(latest: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Split the newest bronze records into (accepted, rejected); rejected rows carry a ``reason``.

    Files that failed to parse are rejected with the parser's reason; a file whose bytes equal an
    earlier path's is rejected as a duplicate of that path, so each text is indexed once.
    """
    live = latest.where(~F.col("is_deleted"))
    failed = live.where(F.col("parse_error").isNotNull()).withColumn("reason", F.col("parse_error"))
    parsed = live.where(F.col("parse_error").isNull())
    first_copy = Window.partitionBy("sha256").orderBy("modified_at", F.length("path"), "path")
    ranked = parsed.withColumn("_copy", F.row_number().over(first_copy)).withColumn(
        "_original", F.first("path").over(first_copy)
    )
    duplicates = ranked.where("_copy > 1").withColumn(
        "reason", F.concat(F.lit("duplicate: same content as "), F.col("_original"))
    )
    accepted = ranked.where("_copy = 1").select(
        *SILVER_FROM_BRONZE,
        F.array(F.lit("public")).alias("access_groups"),
        "ingested_at",
    )
    rejected = failed.unionByName(duplicates.drop("_copy", "_original")).select(
        "path", "sha256", "text", "reason", "run_id"
    )
    return accepted, rejected
