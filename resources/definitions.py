"""The Dagster resources: each engine's plain class (``resources/<engine>.py``) made configurable in Dagster.

The engines themselves import no Dagster, so serving and the CLI's read commands use them directly
(``LanceDBStore.from_settings(settings)``); pipelines get the same classes as Dagster resources here,
built from the same settings by the same ``from_settings``.
"""

from __future__ import annotations

import os
from typing import Any

from dagster import ConfigurableResource, EnvVar

from resources.embedder import Embedder
from resources.evaluation import Evaluation
from resources.kafka import Kafka
from resources.lakehouse import Lakehouse
from resources.lancedb import LanceDBStore
from resources.monitoring import Monitoring
from resources.privacy import Privacy
from resources.quality import Quality
from resources.retries import Retries
from resources.settings import Settings, env_var
from resources.spark import Spark
from resources.tracking import MLflowStore


class SparkResource(ConfigurableResource, Spark):
    """Spark with Delta Lake. ``master`` is ``local[*]`` embedded, or a cluster URL to scale out."""


class LakehouseResource(ConfigurableResource, Lakehouse):
    """Paths of the landing zones, Delta tables and streaming checkpoints."""


class LanceDBResource(ConfigurableResource, LanceDBStore):
    """A LanceDB database: a folder embedded, or an object-store URI (``s3://...``) to scale out."""


class EmbedderResource(ConfigurableResource, Embedder):
    """The embedding model: which one, on which device, in what batches (or the registry alias's)."""


class QualityResource(ConfigurableResource, Quality):
    """A file-backed Great Expectations project folder (``$GROUNDWORK_HOME/gx`` by default)."""


class PrivacyResource(ConfigurableResource, Privacy):
    """The key that tokenises PII columns (the ``pii_key`` setting, or a key file made once)."""

    @classmethod
    def passed_key(cls, s: Settings) -> str:
        """A set key is passed as a reference to its variable (``GROUNDWORK_PII_KEY``), which Dagster
        resolves when a run starts: resource config is shown in the UI, and Dagster shows a reference
        as the variable's name. Dagster rebuilds a resource from its config for each run, so a value
        held anywhere else on the resource would not reach the run."""
        return EnvVar(env_var("pii_key")) if super().passed_key(s) else ""


class MLflowResource(ConfigurableResource, MLflowStore):
    """MLflow tracking and the model registry."""


class EvaluationResource(ConfigurableResource, Evaluation):
    """The retrieval gold set and the promotion gate."""


class MonitoringResource(ConfigurableResource, Monitoring):
    """The monitoring tables, reports and the drift and trend thresholds."""


class KafkaResource(ConfigurableResource, Kafka):
    """The Kafka cluster of the topic sources: bootstrap servers and client options (SASL, TLS)."""

    @classmethod
    def passed_options(cls, s: Settings) -> str:
        """Options set in the environment are passed as a reference to ``GROUNDWORK_KAFKA_OPTIONS``, which
        Dagster resolves when a run starts, so a SASL password never shows in the UI's resource config."""
        return (
            EnvVar(env_var("kafka_options"))
            if os.environ.get(env_var("kafka_options"))
            else super().passed_options(s)
        )


class RetriesResource(ConfigurableResource, Retries):
    """How often, and after what backoff, a step retries a transient engine failure."""


RESOURCE_CLASSES: dict[str, type] = {
    "spark": SparkResource,
    "lakehouse": LakehouseResource,
    "lancedb": LanceDBResource,
    "embedder": EmbedderResource,
    "quality": QualityResource,
    "privacy": PrivacyResource,
    "mlflow": MLflowResource,
    "evaluation": EvaluationResource,
    "retries": RetriesResource,
    "monitoring": MonitoringResource,
    "kafka": KafkaResource,
}


def build_resources(settings: Settings) -> dict[str, Any]:
    """Every resource the assets use, configured from one settings object."""
    return {name: cls.from_settings(settings) for name, cls in RESOURCE_CLASSES.items()}
