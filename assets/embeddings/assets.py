"""``chunk_embeddings``: the LanceDB table that serving searches, kept in step with the gold chunks."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.automation import DOWNSTREAM_OF_BRONZE
from assets.chunks.assets import document_chunks
from assets.freshness import SERVED_DATA_FRESHNESS
from assets.retries import transient_retries
from models.model_registry import model_info, pipeline_embedder
from models.promotion import build_model_table
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

    def report(table_name: str, failure) -> None:
        context.log.error(
            "candidate %s: %s(%s) observed %s",
            table_name,
            failure.expectation,
            failure.column,
            failure.observed_json()[:200],
        )

    result = build_model_table(
        embedder,
        lancedb,
        lakehouse,
        quality,
        model_info=registry,
        run_name=context.run_id,
        activate_new=True,
        report=report,
    )
    # Resolving the device imports torch (3-5 s): a run that embedded nothing has no device to report.
    device = embedder.resolved_device() if result.embedded else "none: nothing embedded"
    context.log.info(
        "chunk_embeddings: embedded %d chunks in %.1fs on %s, deleted %d, table holds %d",
        result.embedded,
        result.embed_seconds,
        device,
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
            "device": device,
            "gold_delta_version": gold_version,
        }
    )
