"""The HTTP API over the chunk index (`groundwork serve`): search, documents, answers, health, metrics.

Contract (OpenAPI at /openapi.json, Swagger UI at /docs):
- Every data endpoint needs an API key (``Authorization: Bearer <key>`` or ``X-API-Key: <key>``);
  missing or unknown → 401. /health, /metrics and the OpenAPI pages are open (monitoring).
- Each query is filtered on the server by the key's access groups, in every mode. A ``groups`` filter
  can only narrow them: naming a group the key does not hold → 403. A document outside the key's
  groups answers 404, exactly like one that does not exist, so its existence does not leak.
- Bad input → 400 with ``{"error": ...}`` (empty or oversized query, k out of range, unknown filter
  field, malformed JSON); the index unavailable or built with a model this server cannot embed
  queries for → 503; every backend of the answer chain failing → 502.
- A key over its request rate or its daily token budget → 429 with Retry-After.
"""

# This module wires the app: lifespan and the middleware (key, size limit, metrics, audit). The endpoints
# are in serving/routes.py by concern, what they share (retrieval, answers) in serving/service.py, the
# bodies and their checks in serving/schemas.py, the error answers in serving/errors.py.

from __future__ import annotations

import contextlib
import time
import uuid

from fastapi import FastAPI, Request

from resources.embedder import Embedder
from resources.settings import Settings
from resources.tracking import MLflowStore
from serving.audit import query_fields
from serving.errors import add_error_handlers, error_response
from serving.keys import Caller
from serving.limits import LimitExceeded
from serving.routes import generation, operations, retrieval
from serving.schemas import ErrorResponse
from serving.service import Service

MAX_BODY_BYTES = 1_000_000
PROTECTED_PREFIXES = ("/search", "/answer", "/documents", "/feedback")
EMBEDDING_PATHS = ("/search", "/answer")  # requests that (usually) embed their query


def create_app(settings: Settings, embedders: list | None = None, tracking=None) -> FastAPI:
    """The FastAPI app; ``embedders`` are the models this server can embed queries with (by default the
    settings' one), ``tracking`` the MLflow store of prompts and registered models."""
    embedders = embedders if embedders is not None else [Embedder.from_settings(settings)]
    tracking = tracking if tracking is not None else MLflowStore.from_settings(settings)
    app = FastAPI(
        title="Groundwork",
        version="1.0",
        summary="Search, cite and answer from the Groundwork chunk index, filtered by the caller's access.",
        description=__doc__,
        lifespan=lifespan,
        responses={
            400: {"model": ErrorResponse},
            401: {"model": ErrorResponse},
            403: {"model": ErrorResponse},
            503: {"model": ErrorResponse},
        },
    )
    app.state.service = Service(settings, embedders, tracking)
    app.add_middleware(AuthenticateMeasureAudit)
    add_error_handlers(app)
    for router in (retrieval, generation, operations):
        app.include_router(router)
    return app


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    """Load the index and model before the first request; write the last audit records at shutdown."""
    service: Service = app.state.service
    service.warm_up()
    yield
    service.batcher.close()
    service.audit.close()


class AuthenticateMeasureAudit:
    """Around every request: a data endpoint's key checked first (401 before anything else), the body
    size bounded, status and latency counted per endpoint, and each data request audited.

    Plain ASGI rather than ``app.middleware("http")``: Starlette's BaseHTTPMiddleware runs every request
    through an extra task and stream, a measurable share of a request's CPU under load."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        service: Service = scope["app"].state.service
        started = time.perf_counter()
        request.state.request_id = request_id = uuid.uuid4().hex
        request.state.audit = {}
        protected = scope["path"].startswith(PROTECTED_PREFIXES)
        caller = service.keys.authenticate(presented_key(request)) if protected else None
        request.state.caller = caller
        status = 500

        async def send_with_request_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        refused = None
        if protected and caller is None:
            refused = error_response(
                401, "missing or invalid API key", request_id, headers={"WWW-Authenticate": "Bearer"}
            )
        elif int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            refused = error_response(413, f"request body over {MAX_BODY_BYTES} bytes", request_id)
        elif protected:
            try:
                service.key_limits.admit(caller.name)
            except LimitExceeded as exc:
                service.metrics.limited.labels(caller.name, exc.reason).inc()
                request.state.audit["error"] = str(exc)
                retry = {"Retry-After": str(exc.retry_after_s)}
                refused = error_response(429, str(exc), request_id, headers=retry)
        try:
            if refused is not None:
                await refused(scope, receive, send_with_request_id)
            elif scope["method"] == "POST" and scope["path"] in EMBEDDING_PATHS:
                with service.batcher.coming():  # a batch being collected may wait for this query
                    await self.app(scope, receive, send_with_request_id)
            else:
                await self.app(scope, receive, send_with_request_id)
        finally:  # an unhandled error (answered 500 by Starlette's outer handler) is counted too
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or ("unmatched" if status == 404 else scope["path"])
            service.metrics.observe(endpoint, status, elapsed)
            if protected:
                audit(service, request, caller, f"{request.method} {endpoint}", status, elapsed)


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def audit(
    service: Service, request: Request, caller: Caller | None, endpoint: str, status: int, elapsed: float
):
    """One audit record: who asked what, what came back; the key itself never, the query per the policy."""
    fields = dict(request.state.audit)
    fields.update(query_fields(fields.get("query"), service.settings.audit_query_policy))
    if caller is None:
        fields["error"] = "missing or invalid API key"
    service.audit.record(
        request_id=request.state.request_id,
        caller=caller.name if caller else None,
        endpoint=endpoint,
        status=status,
        latency_ms=round(elapsed * 1000, 3),
        **fields,
    )
