"""Resources: the only code that knows an engine's address, a path or a credential.

The settings pick each resource's address; asset code never branches on the environment.
"""

from __future__ import annotations

from typing import Any

from resources.embedder import EmbedderResource
from resources.evaluation import EvaluationResource
from resources.lakehouse import LakehouseResource
from resources.privacy import PrivacyResource
from resources.quality import QualityResource
from resources.settings import Settings, get_settings
from resources.spark import SparkResource, s3a_conf, s3a_jars
from resources.tracking import MLflowResource
from resources.vectorstore import LanceDBResource

__all__ = [
    "EmbedderResource",
    "EvaluationResource",
    "LakehouseResource",
    "LanceDBResource",
    "MLflowResource",
    "PrivacyResource",
    "QualityResource",
    "Settings",
    "SparkResource",
    "build_resources",
    "get_settings",
]


def build_resources(settings: Settings | None = None) -> dict[str, Any]:
    """Every resource the assets use, configured from one settings object."""
    s = settings or get_settings()
    object_store = s.object_store_options()
    spark_conf, spark_jars = {}, []
    if s.uses_object_storage:
        spark_conf = s3a_conf(s.s3_endpoint_url, s.s3_region)
        spark_jars = s3a_jars(s.spark_jars_dir)
    return {
        "spark": SparkResource(
            master=s.spark_master,
            jars_dir=str(s.spark_jars_dir),
            driver_memory=s.spark_driver_memory,
            shuffle_partitions=s.spark_shuffle_partitions,
            extra_conf=spark_conf,
            extra_jars=spark_jars,
        ),
        "lakehouse": LakehouseResource(
            landing_uri=s.landing_uri,
            delta_uri=s.delta_uri,
            checkpoint_uri=s.checkpoint_uri,
            stream_max_files_per_batch=s.stream_max_files_per_batch,
            storage_options=object_store,
            vacuum_retain_hours=s.delta_vacuum_retain_hours,
        ),
        "lancedb": LanceDBResource(
            uri=s.lancedb_uri,
            table_name=s.embeddings_table,
            vector_index_min_rows=s.vector_index_min_rows,
            keep_versions_days=s.lancedb_keep_versions_days,
            storage_options=object_store,
        ),
        "embedder": EmbedderResource(
            device=s.embedding_device,
            batch_size=s.embedding_batch_size,
            chunk_max_tokens=s.chunk_max_tokens,
            chunk_overlap_tokens=s.chunk_overlap_tokens,
            registry_alias=s.embedding_model_alias,
        ),
        "quality": QualityResource(gx_root=str(s.gx_root)),
        "privacy": PrivacyResource(key_file=str(s.home / "secrets" / "pii.key")),
        "mlflow": MLflowResource(
            tracking_uri=s.mlflow_tracking_uri,
            registry_uri=s.mlflow_registry_uri,
            artifact_uri=s.mlflow_artifact_uri,
            embedding_model=s.embedding_registered_model,
        ),
        "evaluation": EvaluationResource(
            gold_file=str(s.eval_gold_file),
            k=s.eval_k,
            promotion_mode=s.promotion_eval_mode,
            promotion_tolerance=s.promotion_tolerance,
        ),
    }
