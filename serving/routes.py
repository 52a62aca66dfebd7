"""The endpoints, by concern: retrieval (/search, /documents), generation (/answer), operations (/health,
/metrics). Each takes the app's Service and, on data endpoints, the caller the middleware authenticated."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic_core import to_json

from serving.errors import ApiError
from serving.keys import Caller
from serving.schemas import (
    AnswerRequest,
    AnswerResponse,
    DocumentResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    SearchRequest,
    SearchResponse,
)
from serving.service import PendingAnswer, Retrieval, Service, citations

log = logging.getLogger("groundwork.serving")

_BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False)


# The dependencies are coroutines: FastAPI runs a plain function dependency in a threadpool thread, one
# hop per dependency per request (docs/benchmarks.md, Serving throughput).


async def _service(request: Request) -> Service:
    return request.app.state.service


async def _auth_doc(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    api_key: Annotated[str | None, Security(_API_KEY)],
) -> None:
    """Declares the two ways to send a key in the OpenAPI document; the middleware checks them."""


async def _caller(request: Request, _: Annotated[None, Depends(_auth_doc)]) -> Caller:
    return request.state.caller


ServiceDep = Annotated[Service, Depends(_service)]
CallerDep = Annotated[Caller, Depends(_caller)]


async def _search_request(body: SearchRequest, service: ServiceDep) -> SearchRequest:
    return body.checked(service.limits)


async def _answer_request(body: AnswerRequest, service: ServiceDep) -> AnswerRequest:
    return body.checked(service.limits)


# ---- retrieval ------------------------------------------------------------------------------------------

retrieval = APIRouter(tags=["retrieval"])


@retrieval.post("/search", response_model=SearchResponse)
async def search(
    body: Annotated[SearchRequest, Depends(_search_request)],
    request: Request,
    caller: CallerDep,
    service: ServiceDep,
) -> Response:
    """Top k chunks for a query, in the caller's access groups, with citations."""
    found = await service.retrieve_async(body, caller, request.state.audit)
    return Response(search_json(request.state.request_id, body, found), media_type="application/json")


def search_json(request_id: str, body: SearchRequest, found: Retrieval) -> bytes:
    """A SearchResponse as JSON, serialized straight from the hits by pydantic's Rust serializer: the
    hits are ours, so validating them into Citation models and back (FastAPI's response_model) was work
    for nothing on the busiest endpoint. A test holds it to the SearchResponse schema."""
    return to_json(
        {
            "request_id": request_id,
            "mode": body.mode,
            "k": body.k,
            "table_name": found.state.table_name,
            "table_version": found.state.version,
            "model_id": found.state.model_id,
            "cached": found.cached,
            "hits": found.hits,
        }
    )


@retrieval.get(
    "/documents/{document_id}",
    response_model=DocumentResponse,
    responses={404: {"model": ErrorResponse, "description": "Unknown, or outside the caller's groups"}},
)
def document(document_id: str, request: Request, caller: CallerDep, service: ServiceDep) -> DocumentResponse:
    """Every chunk of one document, in order, if the caller may see it (404 otherwise)."""
    if not document_id or len(document_id) > 200:
        raise ApiError(400, "document id must be 1-200 characters")
    searcher, _ = service.index()
    chunks = searcher.document(document_id, groups=caller.groups)
    request.state.audit.update(query=document_id, chunk_ids=[h.chunk_id for h in chunks])
    if not chunks:
        raise ApiError(404, "document not found")
    return DocumentResponse(
        request_id=request.state.request_id,
        document_id=document_id,
        title=chunks[0].title,
        path=chunks[0].path,
        table_name=chunks[0].table_name,
        table_version=chunks[0].table_version,
        chunks=citations(chunks),
    )


@retrieval.post(
    "/feedback",
    response_model=FeedbackResponse,
    tags=["feedback"],
    responses={404: {"model": ErrorResponse, "description": "Unknown, or another key's request"}},
)
def feedback(
    body: FeedbackRequest, request: Request, caller: CallerDep, service: ServiceDep
) -> FeedbackResponse:
    """Rate one of your own /search or /answer requests, optionally naming the returned chunks that were
    relevant or wrong; another key's request answers 404, like one that does not exist."""
    return service.feedback(body, caller, request.state.request_id)


# ---- generation -----------------------------------------------------------------------------------------

generation = APIRouter(tags=["generation"])


@generation.post(
    "/answer",
    response_model=AnswerResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or server-sent events with stream"},
        429: {"model": ErrorResponse, "description": "The key's rate limit or token budget; see Retry-After"},
        502: {"model": ErrorResponse, "description": "No backend of the generator chain could answer"},
    },
)
def answer(
    body: Annotated[AnswerRequest, Depends(_answer_request)],
    request: Request,
    caller: CallerDep,
    service: ServiceDep,
):
    """Retrieve, render the production RAG prompt, and answer through the generator chain, with the
    passages the answer cites; "the sources do not contain the answer" when nothing relevant was found.

    With ``stream: true`` the answer comes as server-sent events (``token``, ``restart``, ``done`` with the
    whole response, or ``error``). Without any generator set up, the rendered prompt and passages come
    back with ``generated: false``.
    """
    audit = request.state.audit
    found = service.retrieve(body, caller, audit)
    pending = service.plan_answer(body, found, request.state.request_id, audit, caller)
    if not body.stream:
        return pending.run()
    return StreamingResponse(
        answer_events(pending, audit), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def answer_events(pending: PendingAnswer, audit: dict) -> Iterator[str]:
    """The answer as server-sent events: the generator runs in a thread and its tokens are sent as they
    come; the last event is ``done`` (the AnswerResponse) or ``error`` (the status it would have had)."""
    if pending.response is not None:  # refused, cached or not generated: nothing to wait for
        if pending.response.answer:
            yield sse("token", {"text": pending.response.answer})
        yield sse("done", pending.response.model_dump(mode="json"))
        return
    events: queue.Queue = queue.Queue()
    finished = object()

    def produce() -> None:
        try:
            response = pending.run(
                on_token=lambda text: events.put(("token", {"text": text})),
                on_restart=lambda backend, reason: events.put(
                    ("restart", {"backend": backend, "reason": reason})
                ),
            )
            events.put(("done", response.model_dump(mode="json")))
        except ApiError as exc:
            audit["error"] = exc.message
            events.put(("error", {"error": exc.message, "status": exc.status}))
        except Exception:  # the stream has started: the error goes in it
            log.exception("streamed answer failed")
            audit["error"] = "internal error"
            events.put(("error", {"error": "internal error", "status": 500}))
        events.put(finished)

    threading.Thread(target=produce, name="answer-stream", daemon=True).start()
    while (item := events.get()) is not finished:
        yield sse(*item)


# ---- operations (open: monitoring) ----------------------------------------------------------------------

operations = APIRouter(tags=["operations"])


@operations.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
def health(service: ServiceDep):
    """The active table, its version, the model it was built with, its row count, and the circuit
    breaker of each answer backend."""
    names = sorted(e.model_id for e in service.embedders)
    try:
        searcher, state = service.index()
        rows = searcher.row_count()
    except ApiError as exc:
        body = HealthResponse(
            status="unavailable", embedders=names, generators=service.generators.states(), error=exc.message
        )
        return JSONResponse(body.model_dump(), status_code=503)
    return HealthResponse(
        status="ok",
        table_name=state.table_name,
        table_version=state.version,
        model_id=state.model_id,
        rows=rows,
        embedders=names,
        generators=service.generators.states(),
    )


@operations.get("/metrics", response_class=Response)
def metrics(service: ServiceDep) -> Response:
    """Prometheus text format: requests, latency, cache hit rate, audit and injection counts, answer
    tokens and seconds per key and backend, circuit breakers."""
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
