"""Gold: ``document_chunks``, token-bounded chunks of every silver document, ready to embed."""

import hashlib
from collections.abc import Iterator

import pandas as pd
import pyarrow.compute as pc
from dagster import AssetExecutionContext, MaterializeResult, asset
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from assets.automation import DOWNSTREAM_OF_BRONZE
from assets.chunks.chunking import Chunker
from assets.chunks.redaction import redact
from assets.documents.assets import silver_documents
from assets.freshness import SERVED_DATA_FRESHNESS
from assets.incremental import pending_increment, quarantine_rejected
from assets.metadata import column_lineage, delta_metadata
from assets.retries import transient_retries
from resources import EmbedderResource, LakehouseResource, SparkResource

CHUNK_SCHEMA = T.StructType(
    [
        T.StructField("chunk_id", T.StringType(), False),
        T.StructField("document_id", T.StringType(), False),
        T.StructField("chunk_index", T.IntegerType(), False),
        T.StructField("path", T.StringType(), False),
        T.StructField("title", T.StringType(), True),
        T.StructField("media_type", T.StringType(), True),
        T.StructField("heading_path", T.StringType(), True),
        T.StructField("page", T.IntegerType(), True),
        T.StructField("text", T.StringType(), False),
        T.StructField("token_count", T.IntegerType(), False),
        T.StructField("content_hash", T.StringType(), False),
        T.StructField("access_groups", T.ArrayType(T.StringType()), True),
        T.StructField("source_sha256", T.StringType(), True),
        T.StructField("document_pii", T.MapType(T.StringType(), T.IntegerType()), True),
    ]
)


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


def index_hash(content_hash: str, groups) -> str:
    """What the index must match for a chunk: its content and who may read it (so an access change is
    re-indexed even when the text is the same)."""
    return hashlib.sha256(f"{content_hash}|{','.join(sorted(groups))}".encode()).hexdigest()[:32]


def chunk_documents(documents: DataFrame, model_path: str, max_tokens: int, overlap_tokens: int) -> DataFrame:
    """Silver documents → one row per chunk (the chunker runs inside Spark's Python workers).

    PII is redacted from the whole document before chunking, so token bounds hold for what is embedded
    and original PII never reaches the gold table or the index; ``document_pii`` counts what was replaced.
    """

    def chunk_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        chunker = Chunker(model_path, max_tokens, overlap_tokens)
        for batch in batches:
            rows = []
            for doc in batch.itertuples(index=False):
                paged = doc.media_type == "application/pdf"
                text, title = redact(doc.text), redact(doc.title or "")
                pii = {
                    k: text.counts.get(k, 0) + title.counts.get(k, 0) for k in {*text.counts, *title.counts}
                }
                for c in chunker.chunk(doc.document_id, title.text, text.text, paged=paged):
                    rows.append(
                        {
                            "chunk_id": c.chunk_id,
                            "document_id": doc.document_id,
                            "chunk_index": c.chunk_index,
                            "path": doc.path,
                            "title": title.text,
                            "media_type": doc.media_type,
                            "heading_path": c.heading_path,
                            "page": c.page,
                            "text": c.text,
                            "token_count": c.token_count,
                            "content_hash": index_hash(c.content_hash, doc.access_groups),
                            "access_groups": list(doc.access_groups),
                            "source_sha256": doc.sha256,
                            "document_pii": pii,
                        }
                    )
            yield pd.DataFrame(rows, columns=CHUNK_SCHEMA.fieldNames()).astype({"page": "Int32"})

    columns = ["document_id", "path", "title", "media_type", "text", "access_groups", "sha256"]
    return documents.select(*columns).mapInPandas(chunk_batches, CHUNK_SCHEMA)


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
