"""``chunk_embeddings``: the LanceDB table that serving searches, kept in step with the gold chunks."""

from datetime import timedelta

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.automation import DOWNSTREAM_OF_BRONZE
from assets.chunks.assets import document_chunks
from assets.embeddings.index import sync_embeddings
from assets.freshness import SERVED_DATA_FRESHNESS
from models.model_registry import model_info, pipeline_embedder
from pipelines.retries import transient_retries
from quality import suites
from quality.checks import embedding_frame
from resources import EmbedderResource, LakehouseResource, LanceDBResource, MLflowResource, QualityResource


@asset(
    automation_condition=DOWNSTREAM_OF_BRONZE,
    group_name="embeddings",
    kinds={"lancedb", "pytorch"},
    deps=[document_chunks],
    pool="gpu",
    freshness_policy=SERVED_DATA_FRESHNESS,
)
@transient_retries
def chunk_embeddings(
    context: AssetExecutionContext,
    lakehouse: LakehouseResource,
    lancedb: LanceDBResource,
    embedder: EmbedderResource,
    quality: QualityResource,
    mlflow: MLflowResource,
) -> MaterializeResult:
    """One vector per gold chunk: only new or changed chunks are embedded, and removed ones deleted.

    The model is the MLflow registry version behind the embedder's alias (``champion``). A new model
    builds its own table beside the current one; serving switches to it only after the embeddings
    suite passes on it, and the old table stays for rollback.
    """
    template = embedder
    embedder = pipeline_embedder(mlflow, template)
    registry = model_info(mlflow, embedder) if template.registry_alias else {}
    gold_version = lakehouse.version("document_chunks")
    gold = lakehouse.read_arrow("document_chunks")

    def validate_candidate(table) -> bool:
        expectations = suites.chunk_embeddings_suite(gold.num_rows, embedder.dimension)
        outcome = quality.validate(
            embedding_frame(table), "chunk_embeddings_candidate", expectations, context.run_id
        )
        for failure in outcome.failed:
            context.log.error(
                "candidate %s: %s(%s) observed %s",
                table.name,
                failure.expectation,
                failure.column,
                failure.observed_json()[:200],
            )
        return outcome.success

    result = sync_embeddings(
        lancedb.connect(),
        lancedb.table_name,
        gold,
        gold_version or 0,
        embedder.encode,
        lambda: embedder.dimension,  # loads the model: only when the table is new
        embedder.model_name,
        embedder.version,
        vector_index_min_rows=lancedb.vector_index_min_rows,
        keep_versions=timedelta(days=lancedb.keep_versions_days),
        validate=validate_candidate,
        model_info=registry,
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
            "lancedb_uri": MetadataValue.path(f"{lancedb.uri}/{result.table_name}.lance"),
            "lancedb_table": result.table_name,
            "activated": result.activated,
            "model": embedder.model_id,
            "model_registry_version": registry.get("registry_version", ""),
            "model_alias": template.registry_alias,
            "device": embedder.resolved_device(),
            "gold_delta_version": gold_version,
        }
    )
