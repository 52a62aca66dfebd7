"""``chunk_embeddings``: the LanceDB table that serving searches, kept in step with the gold chunks."""

from datetime import timedelta

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.chunks.assets import document_chunks
from assets.embeddings.index import sync_embeddings
from resources import EmbedderResource, LakehouseResource, LanceDBResource
from resources.lakehouse import read_table


@asset(
    group_name="embeddings",
    kinds={"lancedb", "pytorch"},
    deps=[document_chunks],
    pool="gpu",
)
def chunk_embeddings(
    context: AssetExecutionContext,
    lakehouse: LakehouseResource,
    lancedb: LanceDBResource,
    embedder: EmbedderResource,
) -> MaterializeResult:
    """One vector per gold chunk: only new or changed chunks are embedded, and removed ones deleted."""
    gold_path = lakehouse.table_path("document_chunks")
    gold_version = lakehouse.version("document_chunks")
    gold = read_table(gold_path)
    result = sync_embeddings(
        lancedb.connect(),
        lancedb.table_name,
        gold,
        gold_version or 0,
        embedder.encode,
        embedder.dimension,
        embedder.model_name,
        embedder.version,
        vector_index_min_rows=lancedb.vector_index_min_rows,
        keep_versions=timedelta(days=lancedb.keep_versions_days),
    )
    context.log.info(
        "chunk_embeddings: embedded %d chunks in %.1fs on %s, deleted %d, table holds %d",
        result.embedded,
        result.embed_seconds,
        embedder.resolved_device(),
        result.deleted,
        result.rows,
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": result.rows,
            "chunks_embedded": result.embedded,
            "chunks_deleted": result.deleted,
            "embed_seconds": round(result.embed_seconds, 2),
            "lancedb_version": result.version,
            "lancedb_uri": MetadataValue.path(f"{lancedb.uri}/{lancedb.table_name}.lance"),
            "model": embedder.model_id,
            "device": embedder.resolved_device(),
            "gold_delta_version": gold_version,
        }
    )
