"""``adapted_embedder``: the champion fine-tuned on the corpus itself, promoted only through the eval gate.

Not part of the main job (training is minutes to hours): it runs on demand (`groundwork models adapt`,
the ``adapt_embedder`` job) in the ``gpu`` pool: on CUDA when present, else CPU for a bounded number
of steps.
"""

from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset

from assets.embeddings.assets import chunk_embeddings
from models.adaptation import AdaptationParams, adapt
from models.evaluation import load_gold
from models.model_registry import champion_version, ensure_champion, resolve_embedder
from models.promotion import promote
from resources import (
    EmbedderResource,
    EvaluationResource,
    LakehouseResource,
    LanceDBResource,
    MLflowResource,
    QualityResource,
)

ADAPTED_EMBEDDER = "adapted_embedder"


class AdaptationConfig(Config):
    learning_rate: float = AdaptationParams.learning_rate
    batch_size: int = AdaptationParams.batch_size
    epochs: int = AdaptationParams.epochs
    warmup_steps: int = AdaptationParams.warmup_steps
    max_steps: int = AdaptationParams.max_steps
    gpu_max_steps: int = AdaptationParams.gpu_max_steps
    max_pairs: int = AdaptationParams.max_pairs
    queries_per_chunk: int = AdaptationParams.queries_per_chunk
    hard_negatives: bool = AdaptationParams.hard_negatives
    max_seq_length: int = AdaptationParams.max_seq_length
    seed: int = AdaptationParams.seed
    output_dir: str = ""  # default: a ``models`` folder beside the LanceDB folder
    degrade: bool = False  # tests: train on mismatched pairs, to see the gate refuse


@asset(group_name="embeddings", kinds={"pytorch", "mlflow", "lancedb"}, deps=[chunk_embeddings], pool="gpu")
def adapted_embedder(
    context: AssetExecutionContext,
    config: AdaptationConfig,
    lakehouse: LakehouseResource,
    lancedb: LanceDBResource,
    embedder: EmbedderResource,
    quality: QualityResource,
    mlflow: MLflowResource,
    evaluation: EvaluationResource,
) -> MaterializeResult:
    """Fine-tune the champion on pairs mined from the gold chunks, register the result in MLflow, build its
    table beside the champion's and let the existing gate (nDCG@10 on the gold set) promote it or not."""
    gold = load_gold(evaluation.gold_path)
    base = resolve_embedder(mlflow, embedder, version=ensure_champion(mlflow))
    params = AdaptationParams(**{k: getattr(config, k) for k in AdaptationParams.__dataclass_fields__})
    root = Path(config.output_dir) if config.output_dir else Path(lancedb.uri).parent / "models"
    version, info = adapt(
        mlflow, lakehouse, base, root, params, [q.query for q in gold], degrade=config.degrade
    )
    context.log.info(
        "trained v%s on %d pairs: %d steps in %.1fs on %s",
        version,
        info["pairs"],
        info["steps"],
        info["train_seconds"],
        info["device"],
    )
    decision = promote(
        version,
        gold,
        mlflow,
        lancedb,
        lakehouse,
        embedder,
        quality=quality,
        tolerance=evaluation.promotion_tolerance,
        mode=evaluation.promotion_mode,
        k=evaluation.k,
    )
    context.log.info(
        "candidate v%s %s: nDCG@10 %.4f vs champion v%s %.4f",
        version,
        "promoted" if decision.promoted else "refused",
        decision.candidate_ndcg,
        decision.champion_version,
        decision.champion_ndcg,
    )
    return MaterializeResult(
        metadata={
            "registered_version": version,
            "base_model": base.model_id,
            "pairs": info["pairs"],
            "gold_overlap": 0,
            "gold_table_version": info["gold_table_version"],
            "device": info["device"],
            "train_steps": info["steps"],
            "train_seconds": info["train_seconds"],
            "train_loss": info["train_loss"],
            "training_params": MetadataValue.json(params.to_dict()),
            "training_mlflow_run_id": info["mlflow_run_id"],
            "decision": "promoted" if decision.promoted else "refused",
            "promoted": decision.promoted,
            "candidate_table": decision.candidate_table,
            "candidate_ndcg": round(decision.candidate_ndcg, 4),
            "champion_ndcg": round(decision.champion_ndcg, 4),
            "champion_version_before": decision.champion_version,
            "champion_version_after": champion_version(mlflow),
            "promotion_mlflow_run_id": decision.mlflow_run_id,
            "candidate_metrics": MetadataValue.json(
                {k: round(v, 4) for k, v in decision.candidate_metrics.items()}
            ),
            "champion_metrics": MetadataValue.json(
                {k: round(v, 4) for k, v in decision.champion_metrics.items()}
            ),
        }
    )
