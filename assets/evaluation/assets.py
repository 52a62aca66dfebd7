"""``retrieval_evaluation``: how well the active index answers the gold questions, in every search mode."""

import hashlib

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.embeddings.assets import chunk_embeddings
from models.evaluation import evaluate, indexed_paths, load_gold, log_to_mlflow, searcher_function
from models.model_registry import pipeline_embedder
from monitoring.store import record_evaluation
from resources import (
    EmbedderResource,
    EvaluationResource,
    LanceDBResource,
    MLflowResource,
    MonitoringResource,
)
from resources.lancedb.tables import table_model
from serving.search import Searcher


@asset(group_name="evaluation", kinds={"mlflow", "lancedb"}, deps=[chunk_embeddings])
def retrieval_evaluation(
    context: AssetExecutionContext,
    lancedb: LanceDBResource,
    embedder: EmbedderResource,
    mlflow: MLflowResource,
    evaluation: EvaluationResource,
    monitoring: MonitoringResource,
) -> MaterializeResult:
    """Hit@k, recall@k, MRR@10 and nDCG@10 of vector, full-text and hybrid search on the gold set, logged to
    an MLflow run tagged with the model's registry version and the LanceDB table version, and to the
    ``evaluation_history`` Delta table that the ``evaluation_trend`` check reads.

    Without a gold file, or when none of its documents is indexed (your own documents and no questions
    written for them yet), it records that and passes.
    """
    if not evaluation.gold_path.is_file():
        context.log.warning("no gold file at %s: retrieval evaluation skipped", evaluation.gold_path)
        return MaterializeResult(metadata={"evaluated": False, "gold_file": str(evaluation.gold_path)})
    gold = load_gold(evaluation.gold_path)
    model = pipeline_embedder(mlflow, embedder)
    searcher = Searcher(lancedb.connect(), lancedb.table_name, model)
    paths = indexed_paths(searcher.table)
    if not paths & {p for q in gold for p in q.relevant}:
        # An empty index, or a gold set written for other documents (the samples' on your own files).
        context.log.warning(
            "no document of %s is indexed: retrieval evaluation skipped", evaluation.gold_path
        )
        return MaterializeResult(
            metadata={
                "evaluated": False,
                "gold_file": str(evaluation.gold_path),
                "indexed_documents": len(paths),
            }
        )
    evaluated = {
        "model": model.model_id,
        "lancedb_table": searcher.table.name,
        "lancedb_version": searcher.table.version,
        "gold_sha256": hashlib.sha256(evaluation.gold_path.read_bytes()).hexdigest(),
        "k": evaluation.k,
    }
    previous = _previous_evaluation(context)
    if previous is not None and all(previous.get(key) == value for key, value in evaluated.items()):
        # Same model, same table version, same questions: the scores are those already logged.
        context.log.info(
            "index unchanged since MLflow run %s: evaluation not repeated", previous["mlflow_run_id"]
        )
        return MaterializeResult(metadata={**previous, "reused": True})
    report = evaluate(searcher_function(searcher), gold, k=evaluation.k, indexed_paths=paths)
    if report.unknown_paths:
        context.log.warning("gold paths not in the index: %s", ", ".join(report.unknown_paths[:20]))
    tags = {
        "model_id": model.model_id,
        "model_registry_version": model.model_version if embedder.registry_alias else "",
        "model_alias": embedder.registry_alias,
        "lancedb_table": searcher.table.name,
        "lancedb_table_version": searcher.table.version,
        "dagster_run_id": context.run_id,
        "gold_file": str(evaluation.gold_path),
    }
    run_id = log_to_mlflow(mlflow, report, tags, params={"k": evaluation.k, "queries": len(gold)})
    record_evaluation(
        monitoring.history_uri,
        {
            m.mode: {"mrr": m.mrr, "ndcg": m.ndcg, "recall": m.recall, "hit": m.hit}
            for m in report.modes.values()
        },
        {
            **evaluated,
            "model_id": model.model_id,
            "model_registry_version": tags["model_registry_version"],
            "queries": len(gold),
            "mlflow_run_id": run_id,
            "dagster_run_id": context.run_id,
        },
        monitoring.storage_options,
    )
    for mode in report.modes.values():
        context.log.info("%s: %s", mode.mode, mode.summary())
    return MaterializeResult(
        metadata={
            **evaluated,
            "evaluated": True,
            "reused": False,
            **{name: round(value, 4) for name, value in report.metrics().items()},
            "queries": len(gold),
            "unknown_relevant_paths": len(report.unknown_paths),
            "mlflow_run_id": run_id,
            "model_registry_version": tags["model_registry_version"],
            "table_model": MetadataValue.json(table_model(searcher.table)),
            "gold_file": MetadataValue.path(str(evaluation.gold_path)),
        }
    )


def _previous_evaluation(context: AssetExecutionContext) -> dict | None:
    """The metadata of this asset's last materialization that evaluated, as plain values."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    if event is None or event.asset_materialization is None:
        return None
    metadata = {key: value.value for key, value in event.asset_materialization.metadata.items()}
    return metadata if metadata.get("evaluated") and metadata.get("mlflow_run_id") else None
