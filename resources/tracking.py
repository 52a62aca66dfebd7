"""MLflow tracking and model registry: SQLite embedded, a tracking server to scale out."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource


class MLflowResource(ConfigurableResource):
    tracking_uri: str
    registry_uri: str = ""

    def configure(self):
        """Point the mlflow module at this store (creating the SQLite folder) and return it."""
        import mlflow

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)
        return mlflow
