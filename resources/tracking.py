"""MLflow tracking and model registry: SQLite embedded, a tracking server to scale out.

MLflow itself is imported only when a method needs it (importing it takes seconds).
"""

from __future__ import annotations

import threading
from pathlib import Path

from pydantic import BaseModel

from resources.settings import Settings

# Stores this process has opened once. Opening a new SQLite store creates its schema: steps that run side by
# side (pipelines/executor.py) must not both do it, so the first opening of each store is one at a time.
_opened_stores: set[tuple[str, str]] = set()
_opening = threading.Lock()


class MLflowStore(BaseModel):
    """The tracking store, the registry, where run artifacts go, and the registered names of the embedding
    model and the answer generator."""

    tracking_uri: str
    registry_uri: str = ""
    artifact_uri: str = ""
    embedding_model: str = "groundwork-embedder"
    generator_model: str = "groundwork-generator"

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(
            tracking_uri=s.mlflow_tracking_uri,
            registry_uri=s.mlflow_registry_uri,
            artifact_uri=s.mlflow_artifact_uri,
            embedding_model=s.embedding_registered_model,
            generator_model=s.generator_registered_model,
        )

    def configure(self):
        """Point the mlflow module at this store (creating the SQLite folder) and return it."""
        import mlflow

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        registry = self.registry_uri or self.tracking_uri
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(registry)
        if (self.tracking_uri, registry) not in _opened_stores:
            with _opening:
                if (self.tracking_uri, registry) not in _opened_stores:
                    client = mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=registry)
                    client.search_experiments(max_results=1)  # opens (and on first use creates) the store
                    client.search_registered_models(max_results=1)
                    _opened_stores.add((self.tracking_uri, registry))
        return mlflow

    def client(self):
        """A client bound to this store (not to whatever the mlflow module points at)."""
        from mlflow import MlflowClient

        self.configure()
        registry = self.registry_uri or self.tracking_uri
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=registry)

    def experiment_id(self, name: str) -> str:
        """The experiment ``name``, created with its artifacts under ``artifact_uri`` (never ./mlruns)."""
        client = self.client()
        existing = client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        location = None
        if self.artifact_uri:
            location = f"{self.artifact_uri.rstrip('/')}/{name}"
            if "://" not in location:
                Path(location).mkdir(parents=True, exist_ok=True)
                location = Path(location).resolve().as_uri()
        return client.create_experiment(name, artifact_location=location)
