"""A generator registry version as an MLflow pyfunc model (its own module: ``mlflow.pyfunc`` takes seconds
to import, and only registration and ``mlflow.pyfunc.load_model`` need it)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc

from models.generator_registry import generator_file
from resources.llamacpp import LocalModel


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """What ``mlflow.pyfunc.load_model("models:/<generator>@champion")`` returns: prompts in, answers out."""

    def load_context(self, context) -> None:
        spec = json.loads(Path(context.artifacts["spec"]).read_text())
        self.model = LocalModel(generator_file(spec))

    def predict(self, context, model_input: list[str], params: dict | None = None) -> list[str]:
        max_tokens = int((params or {}).get("max_tokens", 256))
        return [
            self.model.chat(prompt, max_tokens)["choices"][0]["message"]["content"] for prompt in model_input
        ]
