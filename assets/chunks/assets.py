"""Gold: ``document_chunks``, token-bounded chunks of every silver document, ready to embed."""

import pyarrow.compute as pc
from dagster import AssetExecutionContext, MaterializeResult, asset
from pyspark.sql import functions as F

from assets.automation import DOWNSTREAM_OF_BRONZE
from assets.chunks.transform import chunk_documents
from assets.documents.assets import silver_documents
from assets.freshness import SERVED_DATA_FRESHNESS
from assets.incremental import pending_increment, quarantine_rejected
from assets.metadata import column_lineage, delta_metadata
from assets.retries import transient_retries
from resources import EmbedderResource, LakehouseResource, SparkResource

CHUNK_LINEAGE = column_lineage(
    {
        "chunk_id": [("silver_documents", "document_id"), ("silver_documents", "text")],
        "document_id": [("silver_documents", "document_id")],
        "chunk_index": [("silver_documents", "text")],
        "path": [("silver_documents", "path")],
        "title": [("silver_documents", "title")],
        "media_type": [("silver_documents", "media_type")],
        "heading_path": [("silver_documents", "text")],
        "page": [("silver_documents", "text"), ("silver_documents", "media_type")],
        "text": [("silver_documents", "text")],
        "token_count": [("silver_documents", "text")],
        "content_hash": [("silver_documents", "title"), ("silver_documents", "text")],
        "access_groups": [("silver_documents", "access_groups")],
        "source_sha256": [("silver_documents", "sha256")],
        "document_pii": [("silver_documents", "text"), ("silver_documents", "title")],
    }
)


GOLD = "document_chunks"


@asset(
    group_name="gold",
    kinds={"spark", "delta"},
    deps=[silver_documents],
    automation_condition=DOWNSTREAM_OF_BRONZE,
    freshness_policy=SERVED_DATA_FRESHNESS,
)
@transient_retries
def document_chunks(
    context: AssetExecutionContext,
    spark: SparkResource,
    lakehouse: LakehouseResource,
    embedder: EmbedderResource,
) -> MaterializeResult:
    """Token-bounded chunks with title, heading path and page; stable ids, so unchanged text keeps its id.

    Only documents changed since the last run are re-chunked: their rows come from silver's Change Data
    Feed, and one idempotent MERGE replaces their chunks (the silver version applied is kept in the
    gold table's Delta log). A document that yields no text goes to ``quarantine_gold``.
    """
    stats = {"documents_rechunked": 0, "chunks_written": 0, "chunks_removed": 0, "max_token_count": 0}
    pii: list = []
    increment = pending_increment(spark, lakehouse, "silver_documents", GOLD)
    if increment is not None:
        session, changes = increment.session, increment.changes
        touched = changes.select("document_id").distinct()
        current = changes.where(F.col("_change_type").isin("insert", "update_postimage")).dropDuplicates(
            ["document_id"]
        )
        current = lakehouse.read(session, "silver_documents").join(
            current.select("document_id"), "document_id", "left_semi"
        )
        chunks = chunk_documents(
            current, embedder.path, embedder.chunk_max_tokens, embedder.chunk_overlap_tokens
        ).withColumns(
            {
                "silver_version": F.lit(increment.upstream_version).cast("long"),
                "chunked_at": F.current_timestamp(),
            }
        )
        chunks = chunks.cache()
        stale = (
            lakehouse.read(session, GOLD).join(touched, "document_id", "left_semi")
            if lakehouse.exists(GOLD)
            else chunks.limit(0)
        )
        stale = stale.join(chunks.select("chunk_id"), "chunk_id", "left_anti").cache()
        empty = current.join(chunks.select("document_id"), "document_id", "left_anti").withColumns(
            {"reason": F.lit("no text to index after parsing"), "run_id": F.lit(context.run_id)}
        )
        quarantine_rejected(
            increment,
            lakehouse,
            {"gold": empty},
            "documents",
            F.col("path"),
            F.lit(None),
            F.col("sha256"),
            F.col("text"),
        )
        lakehouse.apply_changes(
            session,
            chunks.withColumn("_delete", F.lit(False)).unionByName(
                stale.select(*chunks.columns).withColumn("_delete", F.lit(True))
            ),
            GOLD,
            ["chunk_id"],
            changed_when="NOT (s.content_hash <=> t.content_hash)",
            txn=increment.txn,
        )
        pii = (
            chunks.select("document_id", F.explode("document_pii").alias("kind", "n"))
            .dropDuplicates(["document_id", "kind"])
            .groupBy("kind")
            .agg(F.sum("n").alias("n"))
            .collect()
        )
        agg = chunks.agg(
            F.count("*").alias("n"),
            F.max("token_count").alias("max_tokens"),
            F.countDistinct("document_id").alias("docs"),
        ).first()
        stats = {
            "documents_rechunked": agg["docs"],
            "chunks_written": agg["n"],
            "chunks_removed": stale.count(),
            "max_token_count": agg["max_tokens"] or 0,
        }
        chunks.unpersist()
        stale.unpersist()
    documents = pc.count_distinct(lakehouse.read_arrow(GOLD, ["document_id"])["document_id"]).as_py()
    return MaterializeResult(
        metadata=delta_metadata(
            lakehouse,
            GOLD,
            None,
            **{"dagster/column_lineage": CHUNK_LINEAGE},
            documents=documents,
            silver_version=lakehouse.version("silver_documents"),
            **stats,
            pii_redacted=sum(r["n"] for r in pii),
            **{f"pii_redacted_{r['kind'].lower()}": r["n"] for r in pii},
        )
    )
