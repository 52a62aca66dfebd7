"""The embedding model's configuration: which model and version, on which device, in what batches.

The model code itself (offline loading, device choice, fp16 on GPU, encoding) is in
``models/embedding_model.py``; neither needs Dagster (serving embeds queries with them).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from models.embedding_model import (
    MODEL_NAME,
    encode,
    load_model,
    packaged_model_path,
    packaged_model_version,
    resolve_device,
)
from resources.settings import Settings


class Embedder(BaseModel):
    """Turns text into unit-length vectors; the model's name and version travel with every vector.

    With ``registry_alias`` set, pipelines and serving use the model version that alias points at in
    the MLflow registry (``models.model_registry.resolve_embedder``) instead of these fields as given.
    """

    model_name: str = MODEL_NAME
    model_path: str = ""
    model_version: str = ""
    max_seq_length_override: int = 0
    registry_alias: str = ""
    device: str = "auto"
    batch_size: int = 64
    gpu_batch_size: int = 512
    chunk_max_tokens: int = 200
    chunk_overlap_tokens: int = 32

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(
            device=s.embedding_device,
            batch_size=s.embedding_batch_size,
            chunk_max_tokens=s.chunk_max_tokens,
            chunk_overlap_tokens=s.chunk_overlap_tokens,
            registry_alias=s.embedding_model_alias,
        )

    @property
    def path(self) -> str:
        return self.model_path or str(packaged_model_path())

    @property
    def version(self) -> str:
        return self.model_version or packaged_model_version()

    @property
    def model_id(self) -> str:
        """What an index records to refuse vectors from any other model."""
        return f"{self.model_name}@{self.version}"

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def model(self):
        return load_model(self.path, self.resolved_device(), self.max_seq_length_override)

    @property
    def dimension(self) -> int:
        return int(self.model().get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.model().max_seq_length)

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Unit vectors for ``texts``: the GPU batch size on CUDA, else the CPU one."""
        batch = self.gpu_batch_size if self.resolved_device().startswith("cuda") else self.batch_size
        return encode(self.model(), texts, batch, show_progress)
