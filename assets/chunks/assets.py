"""Gold: ``document_chunks``, token-bounded chunks of every silver document, ready to embed."""

import functools

import pyarrow.compute as pc
from dagster import AssetExecutionContext, MaterializeResult, asset
from pyspark.sql import functions as F

from assets.automation import DOWNSTREAM_OF_BRONZE
from assets.chunks.chunking import Chunker
from assets.chunks.transform import CHUNK_SCHEMA, chunk_documents, chunk_rows
from assets.documents.assets import applied_by, silver_documents
from assets.freshness import SERVED_DATA_FRESHNESS
from assets.incremental import SmallIncrement, pending_increments, quarantine_rejected
from assets.metadata import column_lineage, delta_metadata
from assets.quarantine import quarantine_rows, write_quarantine
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
# A chunk is rewritten only when what the index must match changed (Spark SQL and delta-rs alike).
CHUNK_CHANGED = "s.content_hash IS DISTINCT FROM t.content_hash"


@functools.lru_cache(maxsize=4)
def _chunker(model_path: str, max_tokens: int, overlap_tokens: int) -> Chunker:
    """The in-process chunker (its tokenizer loaded once per process, as each Spark worker loads its own)."""
    return Chunker(model_path, max_tokens, overlap_tokens)


def apply_small_document_chunks(
    lakehouse: LakehouseResource, embedder: EmbedderResource, increment: SmallIncrement, run_id: str
) -> tuple[dict, list[dict]]:
    """``document_chunks``' Spark increment, in-process: the same chunker (``chunk_rows``), the same stale
    chunks removed, the same quarantine, one delta-rs MERGE with the same transaction id.
    Returns the stats and the PII counts per kind."""
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    changes = increment.changes
    touched = pc.unique(changes["document_id"]).to_pylist()
    is_current = pc.is_in(changes["_change_type"], pa.array(["insert", "update_postimage"]))
    current_ids = pc.unique(changes.filter(is_current)["document_id"]).to_pylist()
    current = lakehouse.read_arrow_where_in("silver_documents", "document_id", current_ids).to_pandas()
    chunks = chunk_rows(
        current, _chunker(embedder.path, embedder.chunk_max_tokens, embedder.chunk_overlap_tokens)
    ).assign(silver_version=increment.upstream_version, chunked_at=pd.Timestamp.now(tz="UTC"))
    gold_schema = lakehouse.arrow_schema(GOLD)  # None before the first write
    schema = gold_schema or to_arrow_schema(CHUNK_SCHEMA).append(
        pa.field("silver_version", pa.int64())
    ).append(pa.field("chunked_at", pa.timestamp("us", tz="UTC")))
    chunks["document_pii"] = [list(pii.items()) for pii in chunks["document_pii"]]
    fresh = (
        pa.Table.from_pandas(chunks[schema.names], schema=schema, preserve_index=False)
        if len(chunks)
        else schema.empty_table()
    )
    stale = (
        lakehouse.read_arrow_where_in(GOLD, "document_id", touched).select(schema.names).cast(schema)
        if gold_schema is not None
        else fresh.slice(0, 0)
    )
    stale = stale.filter(pc.invert(pc.is_in(stale["chunk_id"], fresh["chunk_id"])))
    empty = current[~current["document_id"].isin(chunks["document_id"])].assign(
        reason="no text to index after parsing", run_id=run_id
    )
    write_quarantine(
        lakehouse,
        "gold",
        quarantine_rows(empty, "documents", empty["path"], None, empty["sha256"], empty["text"]),
        increment.txn,
    )
    rows = pa.concat_tables([fresh, stale]).append_column(
        "_delete", pa.array([False] * fresh.num_rows + [True] * stale.num_rows, pa.bool_())
    )
    lakehouse.merge_arrow(rows, GOLD, ["chunk_id"], changed_when=CHUNK_CHANGED, txn=increment.txn)
    pii = (
        pd.DataFrame(
            [
                (doc, kind, n)
                for doc, pairs in zip(chunks["document_id"], chunks["document_pii"], strict=True)
                for kind, n in pairs
            ],
            columns=["document_id", "kind", "n"],
        )
        .drop_duplicates(["document_id", "kind"])
        .groupby("kind", as_index=False)["n"]
        .sum()
    )
    stats = {
        "documents_rechunked": int(chunks["document_id"].nunique()),
        "chunks_written": len(chunks),
        "chunks_removed": stale.num_rows,
        "max_token_count": int(chunks["token_count"].max()) if len(chunks) else 0,
    }
    return stats, [{"kind": r.kind, "n": int(r.n)} for r in pii.itertuples(index=False)]


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
    gold table's Delta log). A document that yields no text goes to ``quarantine_gold``. A small
    increment is chunked and merged in-process with the same rules (``apply_small_document_chunks``).
    """
    stats = {"documents_rechunked": 0, "chunks_written": 0, "chunks_removed": 0, "max_token_count": 0}
    pii: list = []
    small, increment = pending_increments(spark, lakehouse, "silver_documents", GOLD)
    if small is not None:
        stats, pii = apply_small_document_chunks(lakehouse, embedder, small, context.run_id)
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
        # Counted before the MERGE: counted after it, the cached frame was recomputed against the
        # merged table, where the stale chunks are gone (a removal reported 0).
        removed = stale.count()
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
            changed_when=CHUNK_CHANGED,
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
            "chunks_removed": removed,
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
            applied_by=applied_by(small, increment),
            **stats,
            pii_redacted=sum(r["n"] for r in pii),
            **{f"pii_redacted_{r['kind'].lower()}": r["n"] for r in pii},
        )
    )
