"""Resources: the only code that knows an engine's address, a path or a credential.

The settings pick each resource's address; asset code never branches on the environment. Each engine's
plain code is in its own module (``spark``, ``lakehouse``, ``lancedb``, ``embedder``, ``tracking``,
``retries``, ...) and imports no Dagster; ``resources.definitions`` makes them Dagster resources. The
names below are loaded on first use, so ``import resources.settings`` (every CLI command) costs no
Dagster import.
"""

from __future__ import annotations

import importlib
from typing import Any

_DAGSTER_NAMES = [
    "EmbedderResource",
    "EvaluationResource",
    "KafkaResource",
    "LakehouseResource",
    "LanceDBResource",
    "MLflowResource",
    "MonitoringResource",
    "PrivacyResource",
    "QualityResource",
    "RetriesResource",
    "SparkResource",
    "build_resources",
]
_HOMES = {
    "Settings": "resources.settings",
    "get_settings": "resources.settings",
    **dict.fromkeys(_DAGSTER_NAMES, "resources.definitions"),
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'resources' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
