"""Python client for the Groundwork HTTP API: the same operations, typed results.

from serving.client import GroundworkClient
with GroundworkClient("http://127.0.0.1:8080", api_key) as gw:
    for hit in gw.search("How long is the return window?", k=3).hits:
        print(hit.title, hit.path, hit.score)
    print(gw.answer("How long is the return window?").answer)
    for event in gw.answer_stream("How long is the return window?"):  # tokens as they are written
        print(event.text if event.type == "token" else event.response, end="")
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from serving.schemas import (
    AnswerResponse,
    DocumentResponse,
    FeedbackResponse,
    HealthResponse,
    Mode,
    SearchResponse,
)


class GroundworkError(Exception):
    """The API refused or failed a request: ``status`` is the HTTP status, ``message`` its reason."""

    def __init__(self, status: int, message: str, request_id: str | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class AnswerEvent:
    """One server-sent event of a streamed answer: ``token`` (``text``), ``restart`` (a backend failed
    mid-way: drop the text so far; ``backend``, ``reason``) or ``done`` (``response``, the whole answer)."""

    type: Literal["token", "restart", "done"]
    text: str = ""
    backend: str | None = None
    reason: str | None = None
    response: AnswerResponse | None = None


class GroundworkClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> GroundworkClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                body = response.json()
                message, request_id = body.get("error", response.text), body.get("request_id")
            except ValueError:
                message, request_id = response.text, None
            raise GroundworkError(response.status_code, message, request_id)
        return response.json()

    def search(
        self,
        query: str = "",
        k: int = 5,
        mode: Mode = "hybrid",
        filters: dict[str, Any] | None = None,
        vector: list[float] | None = None,
    ) -> SearchResponse:
        body: dict[str, Any] = {"query": query, "k": k, "mode": mode, "filters": filters or {}}
        if vector is not None:
            body["vector"] = list(vector)
        return SearchResponse.model_validate(self._json(self._http.post("/search", json=body)))

    def document(self, document_id: str) -> DocumentResponse:
        path = "/documents/" + quote(document_id, safe="")
        return DocumentResponse.model_validate(self._json(self._http.get(path)))

    def answer(
        self, query: str, k: int = 5, mode: Mode = "hybrid", filters: dict[str, Any] | None = None
    ) -> AnswerResponse:
        body = {"query": query, "k": k, "mode": mode, "filters": filters or {}}
        return AnswerResponse.model_validate(self._json(self._http.post("/answer", json=body)))

    def answer_stream(
        self, query: str, k: int = 5, mode: Mode = "hybrid", filters: dict[str, Any] | None = None
    ) -> Iterator[AnswerEvent]:
        """The answer as it is written: token events, then one ``done`` event with the whole response
        (citations, usage). A refusal before the stream starts, or an ``error`` event, raises
        GroundworkError."""
        body = {"query": query, "k": k, "mode": mode, "filters": filters or {}, "stream": True}
        with self._http.stream("POST", "/answer", json=body) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            event = None
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event is not None:
                    data = json.loads(line[5:])
                    if event == "token":
                        yield AnswerEvent("token", text=data["text"])
                    elif event == "restart":
                        yield AnswerEvent("restart", backend=data["backend"], reason=data["reason"])
                    elif event == "done":
                        yield AnswerEvent("done", response=AnswerResponse.model_validate(data))
                    elif event == "error":
                        raise GroundworkError(data.get("status", 502), data["error"], None)
                    event = None

    def feedback(
        self,
        request_id: str,
        rating: Literal["up", "down"],
        relevant_chunk_ids: list[str] | None = None,
        wrong_chunk_ids: list[str] | None = None,
        comment: str | None = None,
    ) -> FeedbackResponse:
        """Rate one of this key's /search or /answer responses by its ``request_id``."""
        body = {
            "request_id": request_id,
            "rating": rating,
            "relevant_chunk_ids": relevant_chunk_ids or [],
            "wrong_chunk_ids": wrong_chunk_ids or [],
            "comment": comment,
        }
        return FeedbackResponse.model_validate(self._json(self._http.post("/feedback", json=body)))

    def health(self) -> HealthResponse:
        response = self._http.get("/health")
        if response.status_code not in (200, 503):
            self._json(response)
        return HealthResponse.model_validate(response.json())

    def metrics(self) -> str:
        response = self._http.get("/metrics")
        if response.status_code >= 400:
            self._json(response)
        return response.text
