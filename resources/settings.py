"""One settings object, read from the environment (prefix ``GROUNDWORK_``).

Every path defaults to a folder under ``GROUNDWORK_HOME``; each engine's location can be pointed
elsewhere (a cluster, object storage, a tracking server) by its own setting, without code changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = PROJECT_ROOT / "data" / "samples"
DEFAULT_SOURCES_FILE = PROJECT_ROOT / "assets" / "structured" / "sources.yaml"


class Settings(BaseSettings):
    """Where Groundwork keeps its data and how it reaches its engines."""

    model_config = SettingsConfigDict(env_prefix="GROUNDWORK_", extra="ignore")

    home: Path = PROJECT_ROOT / ".groundwork"
    landing_uri: str = ""
    delta_uri: str = ""
    checkpoint_uri: str = ""
    lancedb_uri: str = ""
    gx_root: Path | None = None
    mlflow_tracking_uri: str = ""
    mlflow_registry_uri: str = ""
    dagster_home: Path | None = None
    sources_file: Path = DEFAULT_SOURCES_FILE

    spark_master: str = "local[*]"
    spark_jars_dir: Path = Path.home() / ".cache" / "groundwork" / "jars"
    spark_driver_memory: str = "4g"
    spark_shuffle_partitions: int = 4
    stream_max_files_per_batch: int = 1000
    # Near-real-time documents: a resident worker run (pipelines/worker.py) keeps Spark and the model warm
    # and polls landing/documents/; false starts one run per landed batch instead.
    documents_worker: bool = True
    documents_worker_poll_seconds: float = 1.0

    embedding_device: str = "auto"
    embedding_batch_size: int = 64
    embeddings_table: str = "chunk_embeddings"
    vector_index_min_rows: int = 10_000
    lancedb_keep_versions_days: float = 7.0
    chunk_max_tokens: int = 200
    chunk_overlap_tokens: int = 32

    # Serving (`groundwork serve`): limits, semantic cache, audit log, optional OpenAI-compatible LLM.
    serve_host: str = "127.0.0.1"
    serve_port: int = 8080
    serve_keys_file: Path | None = None
    serve_max_query_chars: int = 2_000
    serve_max_k: int = 100
    serve_refresh_seconds: float = 1.0
    serve_cache_enabled: bool = True
    serve_cache_threshold: float = 0.97
    audit_uri: str = ""
    audit_query_policy: Literal["text", "hash"] = "hash"
    audit_flush_seconds: float = 1.0
    organisation: str = "Northwind Outfitters"
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: SecretStr | None = None
    llm_timeout_seconds: float = 60.0
    # MLflow: the embedding model's registered name and the alias pipelines and serving resolve;
    # the retrieval gold set, and how much nDCG@10 a candidate may lose and still replace the champion.
    mlflow_artifact_uri: str = ""
    embedding_registered_model: str = "groundwork-embedder"
    embedding_model_alias: str = "champion"
    eval_gold_file: Path = SAMPLES_DIR / "gold" / "questions.jsonl"
    eval_k: int = 5
    promotion_eval_mode: str = "vector"
    promotion_tolerance: float = 0.0
    # Quality checks: a table up to this many rows is validated as pandas, read without Spark.
    quality_pandas_max_rows: int = 200_000
    # Maintenance (pipelines/maintenance.py). Delta refuses VACUUM below 168 h unless told otherwise:
    # a shorter retention can delete files that a long-running reader or writer still needs.
    delta_vacuum_retain_hours: float = 168.0
    # Transient failures (pipelines/retries.py): retries, and the base of the exponential backoff.
    retry_max_retries: int = 3
    retry_delay_seconds: float = 2.0
    # Object storage (S3 or an S3-compatible endpoint such as MinIO). Credentials are not settings: every
    # engine (Spark's s3a, delta-rs, LanceDB, Arrow) reads them from AWS's standard chain (the
    # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables, a profile, an instance role), so they never
    # appear in configuration, the Dagster UI or logs.
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"

    @model_validator(mode="after")
    def _default_locations(self) -> Settings:
        """Fill every unset location with its folder under ``home``."""
        self.home = self.home.expanduser().resolve()
        self.landing_uri = self.landing_uri or str(self.home / "landing")
        self.delta_uri = self.delta_uri or str(self.home / "delta")
        self.checkpoint_uri = self.checkpoint_uri or str(self.home / "checkpoints")
        self.lancedb_uri = self.lancedb_uri or str(self.home / "lancedb")
        self.mlflow_tracking_uri = (
            self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"
        )
        self.mlflow_registry_uri = self.mlflow_registry_uri or self.mlflow_tracking_uri
        self.mlflow_artifact_uri = self.mlflow_artifact_uri or str(self.home / "mlflow" / "artifacts")
        self.gx_root = (self.gx_root or self.home / "gx").expanduser().resolve()
        self.dagster_home = (self.dagster_home or self.home / "dagster").expanduser().resolve()
        self.serve_keys_file = (self.serve_keys_file or self.home / "serving" / "api_keys.db").expanduser()
        self.audit_uri = self.audit_uri or f"{self.delta_uri.rstrip('/')}/serving_audit"
        return self

    @property
    def documents_landing(self) -> str:
        return f"{self.landing_uri.rstrip('/')}/documents"

    @property
    def uses_object_storage(self) -> bool:
        """Whether any data location is on S3 (``s3://`` or Hadoop's ``s3a://``)."""
        uris = (self.landing_uri, self.delta_uri, self.checkpoint_uri, self.lancedb_uri)
        return any(is_s3(uri) for uri in uris)

    def object_store_options(self) -> dict[str, str]:
        """``storage_options`` for delta-rs and LanceDB (both use Rust's object_store keys); no secrets."""
        if not self.uses_object_storage:
            return {}
        options = {"aws_region": self.s3_region}
        if self.s3_endpoint_url:
            options["aws_endpoint"] = self.s3_endpoint_url
            options["aws_allow_http"] = str(self.s3_endpoint_url.startswith("http://")).lower()
        # One writer per table (the pipeline's run queue); delta-rs needs this to write without a lock.
        options["aws_s3_allow_unsafe_rename"] = "true"
        return options


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def get_settings() -> Settings:
    """Read the settings afresh, so a changed environment (a test, a CLI flag) takes effect."""
    return Settings()
