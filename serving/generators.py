"""The backends that can write an answer: an OpenAI-compatible endpoint, the local GGUF model, and the
extractive answer (the best passages quoted with their citations), which needs no model and cannot fail.

Every backend takes the same ``GenerationRequest`` and returns a ``Completion`` with its token counts;
with ``on_token`` it streams. Failures are ``serving.resilience`` errors, classified once here: connect
errors, timeouts, 429 and 5xx are transient (retried), anything else is not.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from serving.resilience import BackendTimeout, PermanentError, TransientError
from serving.search import Hit

TokenSink = Callable[[str], None]


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    question: str
    hits: list[Hit]
    max_tokens: int


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


class Backend(Protocol):
    name: str  # its place in the chain: primary, fallback, local, extractive
    generator: str  # the model that writes (a registered id, an endpoint's model name)
    version: str | None

    def complete(self, request: GenerationRequest, on_token: TokenSink | None = None) -> Completion: ...


def estimated_tokens(text: str) -> int:
    """About four characters a token: for an endpoint that reports no usage."""
    return max(1, len(text) // 4) if text else 0


def _usage(body: dict, prompt: str, text: str) -> tuple[int, int]:
    usage = body.get("usage") or {}
    prompt_tokens = usage.get("prompt_tokens")
    completion_tokens = usage.get("completion_tokens")
    return (
        int(prompt_tokens) if isinstance(prompt_tokens, int) else estimated_tokens(prompt),
        int(completion_tokens) if isinstance(completion_tokens, int) else estimated_tokens(text),
    )


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header as seconds: a number, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class OpenAIBackend:
    """``/chat/completions`` of an OpenAI-compatible endpoint; the key is sent, never logged or shown."""

    def __init__(
        self, name: str, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0
    ):
        self.name = name
        self.generator = model or base_url
        self.version = None
        self.timeout_s = timeout_s
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
        )

    def complete(self, request: GenerationRequest, on_token: TokenSink | None = None) -> Completion:
        payload: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": "user", "content": request.prompt}],
            "temperature": 0,
            "max_tokens": request.max_tokens,
        }
        try:
            if on_token is None:
                return self._complete(payload, request.prompt)
            return self._stream(payload, request.prompt, on_token)
        except httpx.TimeoutException:
            raise BackendTimeout(f"no answer within {self.timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise TransientError(f"unreachable ({type(exc).__name__})") from None

    @staticmethod
    def _check(response: httpx.Response) -> None:
        status = response.status_code
        if status == 429 or status >= 500:
            hinted = retry_after_seconds(response.headers.get("Retry-After"))
            suffix = f", retry after {hinted:g} s" if hinted is not None else ""
            raise TransientError(f"HTTP {status}{suffix}", retry_after_s=hinted)
        if status != 200:
            raise PermanentError(f"HTTP {status}")

    def _complete(self, payload: dict, prompt: str) -> Completion:
        response = self._http.post(self._url, json=payload)
        self._check(response)
        try:
            body = response.json()
            text = body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise PermanentError("malformed answer: no choices[0].message.content") from None
        if not isinstance(text, str):
            raise PermanentError("malformed answer: content is not text")
        return Completion(text, *_usage(body, prompt, text))

    def _stream(self, payload: dict, prompt: str, on_token: TokenSink) -> Completion:
        payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        deadline = time.monotonic() + self.timeout_s
        parts: list[str] = []
        usage: dict = {}
        with self._http.stream("POST", self._url, json=payload) as response:
            self._check(response)
            for line in response.iter_lines():
                if time.monotonic() > deadline:
                    raise BackendTimeout(f"stream not finished within {self.timeout_s:g} s")
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    text = "".join(parts)
                    return Completion(text, *_usage({"usage": usage}, prompt, text))
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise PermanentError("malformed stream chunk") from None
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    token = (choice.get("delta") or {}).get("content")
                    if token:
                        parts.append(token)
                        on_token(token)
        raise TransientError("stream ended before [DONE]")


class LocalBackend:
    """The registered local model (``models/generator_registry.py``) run in this process by llama.cpp.

    Calls run on one worker thread so that a timeout can answer the request; the model finishes (or
    hits max_tokens) in the background, and the next call waits for it."""

    def __init__(self, model, generator: str, version: str, timeout_s: float = 60.0, model_name: str = ""):
        self.name = "local"
        self.model = model  # resources.llamacpp.LocalModel
        self.model_name = model_name  # the weights (SmolLM2-135M-Instruct.Q4_1), beside the registry id
        self.generator = generator
        self.version = version
        self.timeout_s = timeout_s
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-generator")

    def complete(self, request: GenerationRequest, on_token: TokenSink | None = None) -> Completion:
        cancelled = threading.Event()
        sink = None
        if on_token is not None:

            def sink(chunk: dict) -> None:
                for choice in chunk.get("choices") or []:
                    token = (choice.get("delta") or {}).get("content")
                    if token and not cancelled.is_set():
                        on_token(token)

        future = self._worker.submit(self.model.chat, request.prompt, request.max_tokens, sink)
        try:
            body = future.result(timeout=self.timeout_s)
        except FutureTimeout:
            cancelled.set()
            raise BackendTimeout(f"no answer within {self.timeout_s:g} s") from None
        except LookupError as exc:  # the model file is not on this machine
            raise PermanentError(str(exc)) from None
        except Exception as exc:
            raise PermanentError(f"local model failed ({type(exc).__name__})") from None
        if "chunks" in body:
            usage: dict = {}
            parts = []
            for chunk in body["chunks"]:
                usage = chunk.get("usage") or usage
                parts += [(c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or []]
            text = "".join(parts)
            return Completion(text, *_usage({"usage": usage}, request.prompt, text))
        if "error" in body:
            raise PermanentError(f"local model: {str(body['error'])[:200]}")
        text = body["choices"][0]["message"]["content"] or ""
        return Completion(text, *_usage(body, request.prompt, text))


_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_STOP = frozenset(
    "the a an and or of to in on for is are do does i my me can what how when where which who with".split()  # noqa: SIM905
)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


class ExtractiveBackend:
    """No model: the sentence of each of the best passages that shares most words with the question,
    quoted with its citation. Passages flagged as prompt injection are quoted only when nothing else is."""

    name = "extractive"
    generator = "extractive"
    version = None

    def __init__(self, passages: int = 2):
        self.passages = passages

    def complete(self, request: GenerationRequest, on_token: TokenSink | None = None) -> Completion:
        text = extractive_answer(request.question, request.hits, self.passages)
        if on_token is not None and text:
            on_token(text)
        return Completion(text, 0, 0)


def extractive_answer(question: str, hits: list[Hit], passages: int = 2) -> str:
    numbered = list(enumerate(hits, start=1))
    clean = [(n, h) for n, h in numbered if not h.injection_suspected] or numbered
    wanted = _words(question)
    quotes = []
    for n, hit in clean[:passages]:
        sentences = [s.strip() for s in _SENTENCE.split(hit.text) if s.strip()] or [hit.text.strip()]
        best = max(sentences, key=lambda s: len(wanted & _words(s)))  # max keeps the first of equals
        quotes.append(f'"{best}" [{n}]')
    return ("From the sources: " + " ".join(quotes)) if quotes else ""
