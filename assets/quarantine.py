"""The quarantine table: every rejected row or file, with where it came from and why.

Nothing that lands is lost: it is either in a silver table or here, and the counts reconcile.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from resources.lakehouse import LakehouseResource

QUARANTINE_TABLE = "quarantine"
RAW_LIMIT = 4000
QUARANTINE_KEYS = ["layer", "source", "source_file", "record_key", "reason"]


def to_quarantine(
    rejected: DataFrame, layer: str, source: str, source_file: Column, record_key: Column, raw: Column
) -> DataFrame:
    """Shape rejected rows (which carry ``reason`` and ``run_id``) into the quarantine schema."""
    return rejected.select(
        F.lit(layer).alias("layer"),
        F.lit(source).alias("source"),
        source_file.cast("string").alias("source_file"),
        record_key.cast("string").alias("record_key"),
        F.substring(raw.cast("string"), 1, RAW_LIMIT).alias("raw"),
        F.col("reason").cast("string").alias("reason"),
        F.col("run_id").cast("string").alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
    )


def write_quarantine(spark: SparkSession, lakehouse: LakehouseResource, rows: DataFrame) -> int:
    """Record rejected rows once: the same rejection seen again on a re-run is not added twice."""
    return lakehouse.merge(spark, rows, QUARANTINE_TABLE, QUARANTINE_KEYS, changed_when="false")
