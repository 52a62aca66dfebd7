"""Documents: files in the landing zone → ``bronze_documents`` → ``silver_documents`` (Delta)."""

from dagster import AssetExecutionContext, MaterializeResult, asset
from pyspark.sql import functions as F

from assets.documents.transform import (
    SILVER_FROM_BRONZE,
    latest_bronze,
    new_bronze_documents,
    split_silver_documents,
)
from assets.landing import list_landing
from assets.metadata import column_lineage, delta_metadata
from assets.quarantine import to_quarantine, write_quarantine
from resources import LakehouseResource, SparkResource

DOCUMENTS = "documents"
SILVER_DOCUMENTS_LINEAGE = column_lineage(
    {column: [("bronze_documents", column)] for column in SILVER_FROM_BRONZE}
    | {"ingested_at": [("bronze_documents", "ingested_at")], "access_groups": [("bronze_documents", "path")]}
)


@asset(group_name="bronze", kinds={"spark", "delta"})
def bronze_documents(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource
) -> MaterializeResult:
    """Every document file as landed (path, sha256, size, mtime, extracted text, title, media type).

    Append-only: a run adds records only for new or changed files, and a tombstone for a removed one.
    """
    session = spark.session()
    root = lakehouse.landing_path(DOCUMENTS)
    bronze = lakehouse.read(session, "bronze_documents") if lakehouse.exists("bronze_documents") else None
    new = new_bronze_documents(session, list_landing(root), bronze, context.run_id).cache()
    counts = new.groupBy("is_deleted", F.col("parse_error").isNotNull().alias("failed")).count().collect()
    added = sum(r["count"] for r in counts if not r["is_deleted"])
    deleted = sum(r["count"] for r in counts if r["is_deleted"])
    failed = sum(r["count"] for r in counts if r["failed"] and not r["is_deleted"])
    if added or deleted or bronze is None:  # the first run creates the table even when nothing landed
        lakehouse.append(new, "bronze_documents")
    schema = new.schema
    new.unpersist()
    context.log.info(
        "bronze_documents: %d new or changed files (%d unreadable), %d removed", added, failed, deleted
    )
    return MaterializeResult(
        metadata=delta_metadata(
            lakehouse,
            "bronze_documents",
            schema,
            landing_path=root,
            files_added=added,
            files_unreadable=failed,
            files_removed=deleted,
        )
    )


@asset(group_name="silver", kinds={"spark", "delta"}, deps=[bronze_documents])
def silver_documents(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource
) -> MaterializeResult:
    """One clean row per live document; unreadable files and duplicate copies go to quarantine.

    Written with MERGE: unchanged documents are not rewritten and removed documents are deleted,
    so downstream assets see exactly what changed through the Change Data Feed.
    """
    session = spark.session()
    bronze_version = lakehouse.version("bronze_documents")
    latest = latest_bronze(lakehouse.read(session, "bronze_documents"))
    accepted, rejected = split_silver_documents(latest)
    accepted = accepted.withColumn("bronze_version", F.lit(bronze_version).cast("long")).cache()
    lakehouse.merge(
        session,
        accepted,
        "silver_documents",
        ["document_id"],
        changed_when="s.sha256 <> t.sha256",
        delete_missing=True,
    )
    rejected = rejected.cache()
    quarantined = rejected.count()
    if quarantined:
        write_quarantine(
            session,
            lakehouse,
            to_quarantine(rejected, "silver", DOCUMENTS, F.col("path"), F.col("sha256"), F.col("text")),
        )
    live = latest.where(~F.col("is_deleted")).count()
    accepted_count = accepted.count()
    schema = accepted.schema
    accepted.unpersist()
    rejected.unpersist()
    return MaterializeResult(
        metadata=delta_metadata(
            lakehouse,
            "silver_documents",
            schema,
            **{"dagster/column_lineage": SILVER_DOCUMENTS_LINEAGE},
            documents_landed=live,
            documents_accepted=accepted_count,
            documents_quarantined=quarantined,
            bronze_version=bronze_version,
        )
    )
