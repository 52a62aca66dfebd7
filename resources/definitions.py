"""The Dagster resources: each engine's plain class (``resources/<engine>.py``) made configurable in Dagster.

The engines themselves import no Dagster, so serving and the CLI's read commands use them directly
(``LanceDBStore.from_settings(settings)``); pipelines get the same classes as Dagster resources here,
built from the same settings by the same ``from_settings``.
"""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource

from resources.embedder import Embedder
from resources.evaluation import Evaluation
from resources.lakehouse import Lakehouse
from resources.privacy import Privacy
from resources.quality import Quality
from resources.settings import Settings, get_settings
from resources.spark import Spark
from resources.tracking import MLflowStore
from resources.vectorstore import LanceDBStore


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
    """The key that tokenises PII columns (from ``GROUNDWORK_PII_KEY`` or a key file made once)."""


class MLflowResource(ConfigurableResource, MLflowStore):
    """MLflow tracking and the model registry."""


class EvaluationResource(ConfigurableResource, Evaluation):
    """The retrieval gold set and the promotion gate."""


RESOURCE_CLASSES: dict[str, type] = {
    "spark": SparkResource,
    "lakehouse": LakehouseResource,
    "lancedb": LanceDBResource,
    "embedder": EmbedderResource,
    "quality": QualityResource,
    "privacy": PrivacyResource,
    "mlflow": MLflowResource,
    "evaluation": EvaluationResource,
}


def build_resources(settings: Settings | None = None) -> dict[str, Any]:
    """Every resource the assets use, configured from one settings object."""
    s = settings or get_settings()
    return {name: cls.from_settings(s) for name, cls in RESOURCE_CLASSES.items()}
