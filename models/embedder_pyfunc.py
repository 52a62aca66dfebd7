"""The registry version as an MLflow pyfunc model (its own module: importing ``mlflow.pyfunc`` takes
seconds, and only registration and ``mlflow.pyfunc.load_model`` need it)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc

from models.model_registry import TAG_MAX_SEQ, weights_location
from resources.embedder import Embedder


class EmbedderModel(mlflow.pyfunc.PythonModel):
    """What ``mlflow.pyfunc.load_model("models:/<name>@champion")`` returns: texts in, unit vectors out."""

    def load_context(self, context) -> None:
        spec = json.loads(Path(context.artifacts["spec"]).read_text())
        path = weights_location(spec)
        self.embedder = Embedder(
            model_name=spec["registered_model"],
            model_path=str(path),
            max_seq_length_override=int(spec.get(TAG_MAX_SEQ, 0)),
        )

    def predict(self, context, model_input: list[str], params: dict | None = None) -> list[list[float]]:
        return self.embedder.encode(list(model_input)).tolist()
