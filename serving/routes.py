"""The endpoints, by concern: retrieval (/search, /documents), generation (/answer), operations (/health,
/metrics). Each takes the app's Service and, on data endpoints, the caller the middleware authenticated."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.errors import ApiError
from serving.keys import Caller
from serving.schemas import (
    AnswerRequest,
    AnswerResponse,
    DocumentResponse,
    ErrorResponse,
    HealthResponse,
    SearchRequest,
    SearchResponse,
)
from serving.service import Service, citations

_BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False)


def _service(request: Request) -> Service:
    return request.app.state.service


def _auth_doc(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    api_key: Annotated[str | None, Security(_API_KEY)],
) -> None:
    """Declares the two ways to send a key in the OpenAPI document; the middleware checks them."""


def _caller(request: Request, _: Annotated[None, Depends(_auth_doc)]) -> Caller:
    return request.state.caller


ServiceDep = Annotated[Service, Depends(_service)]
CallerDep = Annotated[Caller, Depends(_caller)]


def _search_request(body: SearchRequest, service: ServiceDep) -> SearchRequest:
    return body.checked(service.limits)


def _answer_request(body: AnswerRequest, service: ServiceDep) -> AnswerRequest:
    return body.checked(service.limits)


# ---- retrieval ------------------------------------------------------------------------------------------

retrieval = APIRouter(tags=["retrieval"])


@retrieval.post("/search", response_model=SearchResponse)
def search(
    body: Annotated[SearchRequest, Depends(_search_request)],
    request: Request,
    caller: CallerDep,
    service: ServiceDep,
) -> SearchResponse:
    """Top k chunks for a query, in the caller's access groups, with citations."""
    found = service.retrieve(body, caller, request.state.audit)
    return SearchResponse(
        request_id=request.state.request_id,
        mode=body.mode,
        k=body.k,
        table_name=found.state.table_name,
        table_version=found.state.version,
        model_id=found.state.model_id,
        cached=found.cached,
        hits=citations(found.hits),
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


# ---- generation -----------------------------------------------------------------------------------------

generation = APIRouter(tags=["generation"])


@generation.post("/answer", response_model=AnswerResponse, responses={502: {"model": ErrorResponse}})
def answer(
    body: Annotated[AnswerRequest, Depends(_answer_request)],
    request: Request,
    caller: CallerDep,
    service: ServiceDep,
) -> AnswerResponse:
    """Retrieve, render the production RAG prompt, and call the configured LLM (if any).

    Without an LLM endpoint the rendered prompt and passages come back with ``generated: false``.
    """
    found = service.retrieve(body, caller, request.state.audit)
    return service.answer(body, found, request.state.request_id, request.state.audit)


# ---- operations (open: monitoring) ----------------------------------------------------------------------

operations = APIRouter(tags=["operations"])


@operations.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
def health(service: ServiceDep):
    """The active table, its version, the model it was built with and its row count."""
    names = sorted(e.model_id for e in service.embedders)
    try:
        searcher, state = service.index()
        rows = searcher.row_count()
    except ApiError as exc:
        body = HealthResponse(status="unavailable", embedders=names, error=exc.message)
        return JSONResponse(body.model_dump(), status_code=503)
    return HealthResponse(
        status="ok",
        table_name=state.table_name,
        table_version=state.version,
        model_id=state.model_id,
        rows=rows,
        embedders=names,
    )


@operations.get("/metrics", response_class=Response)
def metrics(service: ServiceDep) -> Response:
    """Prometheus text format: requests, latency, cache hit rate, audit and injection counts."""
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
