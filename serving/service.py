"""What the endpoints share, built once per app: the index, keys, limits, cache, audit log, metrics, prompt
and generators, and retrieval (embed, look in the cache, search within the caller's groups) and answering
on top of it (refuse when nothing relevant was found, generate through the chain, check the citations,
account for the tokens)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np

from resources.lancedb import LanceDBStore
from resources.settings import Settings
from serving.answers import Generators
from serving.audit import AuditLog, tokens_spent_since
from serving.batching import Overloaded, QueryBatcher
from serving.cache import CacheScope, SemanticCache
from serving.chain import NoBackendAnswered
from serving.errors import ApiError
from serving.generators import GenerationRequest
from serving.grounding import NO_ANSWER, ground, relevant
from serving.keys import Caller, KeyStore
from serving.limits import KeyLimits, LimitExceeded
from serving.llm import render_sources
from serving.metrics import BreakerCollector, ConsumerLagCollector, FilterPlanCollector, Metrics
from serving.schemas import (
    AnswerRequest,
    AnswerResponse,
    BackendStep,
    Citation,
    FeedbackRequest,
    FeedbackResponse,
    Limits,
    QueryRequest,
    SearchRequest,
    Usage,
)
from serving.search import (
    GroupNotAllowedError,
    Hit,
    IndexState,
    ModelMismatchError,
    Searcher,
    effective_groups,
    filter_clause,
)

log = logging.getLogger("groundwork.serving")
RAG_PROMPT = "rag_answer"
PROMPT_TTL_SECONDS = 10.0  # how long a loaded production prompt is reused before the alias is re-read
ENCODE_TIMEOUT_SECONDS = 30.0  # a query's vector awaited at most this long (the batcher answers sooner)


def citations(hits: list[Hit]) -> list[Citation]:
    return [Citation(**h.to_dict()) for h in hits]


@dataclass(frozen=True)
class Retrieval:
    """What one query found: the hits, the index state that answered, the caller's effective groups, the
    query's vector (the cache key of an answer built on it), and whether it came from the cache."""

    hits: list[Hit]
    state: IndexState
    groups: frozenset[str]
    vector: np.ndarray | None  # None for a full-text query with the cache off
    cached: bool
    embedding_seconds: float = 0.0


@dataclass(frozen=True)
class _Plan:
    searcher: Searcher
    state: IndexState
    groups: frozenset[str]
    given: Any  # the request's own query vector, if it sent one
    embeds: bool  # whether the query needs a vector (a full-text query with the cache off does not)


@contextlib.contextmanager
def request_errors() -> Iterator[None]:
    """A query the index refuses, as the API answers it: a group the caller lacks 403, an index built with
    a model this server cannot embed for 503, a bad filter or vector 400."""
    try:
        yield
    except GroupNotAllowedError as exc:
        raise ApiError(403, str(exc)) from None
    except ModelMismatchError as exc:
        raise ApiError(503, str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def limit_error(exc: LimitExceeded) -> ApiError:
    return ApiError(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})


@dataclass
class PendingAnswer:
    """An answer decided up to the generator call: ``response`` when none is needed (refusal, cache,
    no generator), else ``run`` generates it (streaming tokens to ``on_token`` when given)."""

    response: AnswerResponse | None = None
    generate: Callable[..., AnswerResponse] | None = field(default=None, repr=False)

    def run(self, on_token=None, on_restart=None) -> AnswerResponse:
        if self.response is not None:
            return self.response
        return self.generate(on_token, on_restart)


class Service:
    """Everything a request needs, built once per app from the settings, an embedder list and the
    MLflow store (read only for the prompt and for a model the active table does not record)."""

    def __init__(self, settings: Settings, embedders: list, tracking=None):
        self.settings = settings
        self.embedders = embedders
        self.tracking = tracking
        self.limits = Limits(settings.serve_max_k, settings.serve_max_query_chars)
        self.keys = KeyStore(settings.serve_keys_file)
        self.cache = SemanticCache(settings.serve_cache_threshold, enabled=settings.serve_cache_enabled)
        self.audit = AuditLog(
            settings.audit_uri,
            flush_seconds=settings.audit_flush_seconds,
            storage_options=settings.object_store_options(),
        )
        self.metrics = Metrics()
        self.metrics.cache_hit_ratio.set_function(lambda: self.cache.hit_rate)
        self.metrics.audit_written.set_function(lambda: self.audit.written)
        self.metrics.audit_dropped.set_function(lambda: self.audit.dropped + self.audit.failed)
        self.metrics.registry.register(FilterPlanCollector(lambda: self._searcher))
        self.metrics.registry.register(ConsumerLagCollector(settings))
        self.batcher = QueryBatcher(
            max_batch=settings.serve_batch_max_size,
            window_s=settings.serve_batch_window_ms / 1000,
            max_queue=settings.serve_queue_max,
            on_batch=lambda size, _: self.metrics.query_batch_size.observe(size),
            workers=settings.serve_encoder_threads,
        )
        self.metrics.query_queue_depth.set_function(lambda: self.batcher.waiting)
        self.key_limits = KeyLimits(settings.serve_key_requests_per_minute, settings.serve_key_tokens_per_day)
        if settings.serve_key_tokens_per_day:  # budgets on: today's account so far, read once
            self.key_limits.start_day(
                tokens_spent_since(
                    settings.audit_uri, self.key_limits.today_began(), settings.object_store_options()
                )
            )
        self.generators = Generators(
            settings,
            tracking,
            on_call=lambda backend, outcome: self.metrics.generator_calls.labels(backend, outcome).inc(),
        )
        self.metrics.registry.register(BreakerCollector(lambda: self.generators.breakers))
        self._searcher: Searcher | None = None
        self._lock = threading.Lock()
        self._prompt: tuple[float, Any] | None = None

    # ---- the index --------------------------------------------------------------------------------------

    def searcher(self) -> Searcher:
        """The searcher, created on first use (the index may appear after the server starts)."""
        if self._searcher is None:
            with self._lock:
                if self._searcher is None:
                    self._searcher = Searcher(
                        LanceDBStore.from_settings(self.settings).connect(),
                        self.settings.embeddings_table,
                        self.embedders,
                        refresh_seconds=self.settings.serve_refresh_seconds,
                        resolve=self.registered_embedder,
                    )
                    self._searcher.encode_query = self._encode_query
        return self._searcher

    def _encode_query(self, embedder, text: str) -> np.ndarray:
        """One query's vector, embedded in a batch with the other requests' (503 when too many wait)."""
        try:
            return self.batcher.encode(embedder.model_id, embedder.encode, text)
        except Overloaded as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None

    def registered_embedder(self, model: dict):
        """The embedder of the active table's ``model`` (``table_model``), so a promotion or rollback is
        followed without a restart: from the weights the table records, else from the MLflow registry
        (``<registered name>@<version>``); None when neither knows it."""
        from models.model_registry import recorded_embedder, resolve_embedder

        if not self.embedders:
            return None
        try:
            recorded = recorded_embedder(model, self.embedders[0])
        except LookupError as exc:  # the recorded weights are not on this machine
            log.warning("cannot load the embedding model of %s: %s", model.get("model_id"), exc)
            return None
        if recorded is not None:
            return recorded
        name, _, version = model.get("model_id", "").rpartition("@")
        if self.tracking is None or name != self.tracking.embedding_model:
            return None
        try:
            return resolve_embedder(self.tracking, self.embedders[0], version=version)
        except Exception as exc:  # an unknown version, or the registry unreachable: 503 says why
            log.warning("cannot resolve embedding model %s from the registry: %s", model.get("model_id"), exc)
            return None

    def index(self) -> tuple[Searcher, IndexState]:
        """Searcher and active-table state, or 503 when there is no index or no embedder for its model."""
        try:
            searcher = self.searcher()
            state = searcher.state()
            searcher.embedder  # noqa: B018  (raises when this server cannot embed for the table's model)
        except (LookupError, ModelMismatchError) as exc:
            raise ApiError(503, str(exc)) from None
        self.metrics.index_version.set(state.version)
        return searcher, state

    def warm_up(self) -> None:
        """Load the index and the query model before the first request (loading the model takes seconds)."""
        try:
            self.index()[0].embed("warm up")
        except ApiError as exc:
            log.warning("serving without an index for now: %s", exc.message)

    # ---- retrieval and answers ------------------------------------------------------------------------

    def retrieve(self, query: QueryRequest, caller: Caller, audit: dict) -> Retrieval:
        """The top ``query.k`` chunks the caller may see (from the cache when an earlier query of the same
        scope was close enough); what /search and /answer share. ``audit`` collects the request's record."""
        plan = self._plan(query, caller, audit)
        started = time.perf_counter()
        with request_errors():
            vector = plan.searcher.query_vector(query.query, plan.given, plan.state) if plan.embeds else None
        return self._found(plan, query, caller, audit, vector, time.perf_counter() - started)

    async def retrieve_async(self, query: QueryRequest, caller: Caller, audit: dict) -> Retrieval:
        """``retrieve`` for an endpoint on the event loop: the query's vector is awaited there (the
        batcher's future) instead of a threadpool thread blocking on it; the search, which blocks, runs in
        a thread."""
        plan = self._plan(query, caller, audit)
        started = time.perf_counter()
        vector = None
        if plan.embeds and plan.given is not None:
            with request_errors():
                vector = plan.searcher.query_vector(query.query, plan.given, plan.state)
        elif plan.embeds:
            vector = await self._embed_async(plan.searcher, plan.state, query.query)
        seconds = time.perf_counter() - started
        # The search in a thread: on the loop it held up the next requests' way to the batcher, and the
        # batches got smaller (docs/benchmarks.md).
        return await anyio.to_thread.run_sync(
            lambda: self._found(plan, query, caller, audit, vector, seconds)
        )

    async def _embed_async(self, searcher: Searcher, state: IndexState, text: str) -> np.ndarray:
        embedder = searcher.embedders.get(state.model_id)
        if embedder is None:  # another model's table: resolving it may load the model (seconds), off the loop
            with request_errors():
                embedder = await anyio.to_thread.run_sync(lambda: searcher.embedder)
        try:
            future = self.batcher.submit(embedder.model_id, embedder.encode, text)
        except Overloaded as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None
        return await asyncio.wait_for(asyncio.wrap_future(future), ENCODE_TIMEOUT_SECONDS)

    def _plan(self, query: QueryRequest, caller: Caller, audit: dict) -> _Plan:
        """What a query needs before its vector: the index, the caller's effective groups (403 for a group
        it lacks), the filters checked, and whether it is embedded at all."""
        audit.update(mode=query.mode, k=query.k, query=query.query or None)
        searcher, state = self.index()
        with request_errors():
            groups = effective_groups(caller.groups, query.filters)
            filter_clause(query.filters, state.columns)
        given = query.vector if isinstance(query, SearchRequest) else None
        # A full-text query needs its vector only as the semantic cache's key (and /answer's).
        embeds = query.mode != "fulltext" or self.cache.enabled or given is not None
        if given is not None or not embeds:
            self.batcher.arrived()  # no query of this request for the batcher to wait for
        return _Plan(searcher, state, groups, given, embeds)

    def _found(
        self,
        plan: _Plan,
        query: QueryRequest,
        caller: Caller,
        audit: dict,
        vector: np.ndarray | None,
        seconds: float,
    ) -> Retrieval:
        """The search (or the cache's answer) for ``plan`` and its vector, with its metrics and audit."""
        searcher, state, groups = plan.searcher, plan.state, plan.groups
        embedding_seconds = seconds if plan.given is None and plan.embeds else 0.0
        cached = self._cached(self._scope("search", groups, query, state), vector)
        if cached is not None:
            hits, state = cached
        else:
            hits = self._search(searcher, query, groups, vector)
            if hits:
                state = IndexState(hits[0].table_name, hits[0].table_version, state.model_id, state.dimension)
            self.cache.put(self._scope("search", groups, query, state), vector, (hits, state))
        self.metrics.injection_flags.inc(sum(h.injection_suspected for h in hits))
        if query.mode == "vector" and hits:  # the closest passage's similarity, free in vector mode
            audit.update(best_similarity=hits[0].score)
        audit.update(
            chunk_ids=[h.chunk_id for h in hits],
            table_version=state.version,
            cache_hit=cached is not None,
            embedding_seconds=embedding_seconds,
        )
        self.metrics.embedding_seconds.labels(caller.name).inc(embedding_seconds)
        return Retrieval(hits, state, groups, vector, cached is not None, embedding_seconds)

    def answer(
        self,
        query: AnswerRequest,
        found: Retrieval,
        request_id: str,
        audit: dict,
        caller: Caller | None = None,
    ) -> AnswerResponse:
        """The answer to ``query`` from ``found``'s passages, written by the first backend of the chain
        that can (see ``plan_answer``)."""
        return self.plan_answer(query, found, request_id, audit, caller).run()

    def plan_answer(
        self,
        query: AnswerRequest,
        found: Retrieval,
        request_id: str,
        audit: dict,
        caller: Caller | None = None,
    ) -> PendingAnswer:
        """Everything an answer decides before a generator runs, so that a stream starts only once it can
        succeed: the prompt, the refusal when no passage is relevant enough (no model called), the cache
        (a close enough query of the same scope, prompt version and generators), the caller's token
        budget (429). Without any generator set up, the rendered prompt comes back (``generated: false``)."""
        s = self.settings
        key = caller.name if caller is not None else "-"
        prompt = self.prompt()
        rendered = prompt.format(
            organisation=s.organisation, sources=render_sources(found.hits), question=query.query
        )
        similarity = self.best_similarity(query, found)
        usage = Usage(embedding_seconds=round(found.embedding_seconds, 6))
        base = dict(
            request_id=request_id,
            prompt_name=prompt.name,
            prompt_version=prompt.version,
            prompt=rendered,
            table_name=found.state.table_name,
            table_version=found.state.version,
            model_id=found.state.model_id,
            cached=False,
            passages=citations(found.hits),
            best_similarity=similarity,
            usage=usage,
        )
        audit.update(prompt_version=prompt.version, best_similarity=similarity)
        if not relevant(similarity, s.answer_min_similarity):
            audit.update(grounded=False)
            response = AnswerResponse(**base, generated=False, answer=NO_ANSWER, llm_model=None, refused=True)
            return PendingAnswer(response)
        chain = self.generators.chain()
        scope = self._scope(
            "answer", found.groups, query, found.state, [prompt.version, self.generators.signature(chain)]
        )
        cached = self._cached(scope, found.vector)
        if cached is not None:
            saved = cached.usage.prompt_tokens + cached.usage.completion_tokens
            self.metrics.tokens_saved.labels(key).inc(saved)
            audit.update(cache_hit=True, tokens_saved=saved, backend=cached.backend, grounded=cached.grounded)
            audit.update(generator=cached.generator, generator_version=cached.generator_version)
            update = {
                "request_id": request_id,
                "cached": True,
                "usage": Usage(**{**usage.model_dump(), "tokens_saved": saved}),
            }
            return PendingAnswer(cached.model_copy(update=update))
        if chain is None:
            return PendingAnswer(AnswerResponse(**base, generated=False, answer=None, llm_model=None))
        try:
            self.key_limits.check_budget(key)
        except LimitExceeded as exc:
            self.metrics.limited.labels(key, exc.reason).inc()
            raise limit_error(exc) from None

        def generate(on_token=None, on_restart=None) -> AnswerResponse:
            request = GenerationRequest(rendered, query.query, found.hits, s.answer_max_tokens)
            try:
                generation = chain.generate(request, on_token, on_restart)
            except NoBackendAnswered as exc:
                audit.update(backend=None, grounded=False)
                raise ApiError(502, str(exc)) from None
            backend, completion = generation.backend, generation.completion
            checked = ground(completion.text, len(found.hits))
            spent = completion.prompt_tokens + completion.completion_tokens
            self.key_limits.spend(key, spent)
            m = self.metrics
            m.answer_tokens.labels(key, backend.name, "prompt").inc(completion.prompt_tokens)
            m.answer_tokens.labels(key, backend.name, "completion").inc(completion.completion_tokens)
            m.generation_seconds.labels(key, backend.name).inc(generation.seconds)
            audit.update(
                backend=backend.name,
                generator=backend.generator,
                generator_version=backend.version,
                grounded=checked.grounded,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                generation_seconds=generation.seconds,
            )
            model = getattr(backend, "model_name", None) or backend.generator
            response = AnswerResponse(
                **{
                    **base,
                    "usage": Usage(
                        prompt_tokens=completion.prompt_tokens,
                        completion_tokens=completion.completion_tokens,
                        generation_seconds=round(generation.seconds, 6),
                        embedding_seconds=usage.embedding_seconds,
                    ),
                },
                generated=backend.name != "extractive",
                answer=checked.text,
                llm_model=model if backend.name != "extractive" else None,
                backend=backend.name,
                generator=backend.generator,
                generator_version=backend.version,
                chain=[BackendStep(**step.__dict__) for step in generation.trail],
                grounded=checked.grounded,
                citations=checked.cited,
                cited_passages=[base["passages"][n - 1] for n in checked.cited],
                invalid_citations=checked.invalid,
            )
            if backend.name != "extractive":  # a stand-in answer is not kept: the next may be a model's
                self.cache.put(scope, found.vector, response)
            return response

        return PendingAnswer(generate=generate)

    def feedback(self, body: FeedbackRequest, caller: Caller, feedback_id: str) -> FeedbackResponse:
        """Store a rating of one of ``caller``'s own /search or /answer requests (docs/monitoring.md).

        The rated request is looked up in the audit log (flushed first when it is not there yet); another
        key's request answers 404 like an unknown one. Chunk ids must be among those the request returned,
        so a rating cannot name (or probe for) chunks outside the caller's groups."""
        from monitoring.feedback import RATEABLE_ENDPOINTS, record_feedback
        from serving.audit import audited_request

        options = self.settings.object_store_options()
        audited = audited_request(self.settings.audit_uri, body.request_id, options)
        if audited is None:
            self.audit.flush()
            audited = audited_request(self.settings.audit_uri, body.request_id, options)
        if audited is None or audited["caller"] != caller.name:
            raise ApiError(404, "request not found")
        if audited["endpoint"] not in RATEABLE_ENDPOINTS or audited["status"] != 200:
            raise ApiError(400, "only a successful /search or /answer request can be rated")
        returned = audited["chunk_ids"] or []
        named = set(body.relevant_chunk_ids) | set(body.wrong_chunk_ids)
        if not named <= set(returned):
            raise ApiError(400, "relevant_chunk_ids and wrong_chunk_ids must be chunks the request returned")
        relevant = body.relevant_chunk_ids or [c for c in returned if c not in body.wrong_chunk_ids]
        paths = self._paths(relevant) if body.rating == "up" else []
        record_feedback(
            self.settings.feedback_uri,
            {
                "feedback_id": feedback_id,
                "request_id": body.request_id,
                "caller": caller.name,
                "endpoint": audited["endpoint"],
                "rating": body.rating,
                "relevant_chunk_ids": body.relevant_chunk_ids,
                "wrong_chunk_ids": body.wrong_chunk_ids,
                "relevant_paths": paths,
                "comment": body.comment,
                "table_version": audited["table_version"],
            },
            options,
        )
        return FeedbackResponse(
            request_id=feedback_id, rated_request_id=body.request_id, rating=body.rating, relevant_paths=paths
        )

    def _paths(self, chunk_ids: list[str]) -> list[str]:
        """The document paths of ``chunk_ids`` in the active table, in their order (gold files name paths)."""
        if not chunk_ids:
            return []
        searcher, _ = self.index()
        found = searcher.chunk_paths(chunk_ids)
        return list(dict.fromkeys(found[c] for c in chunk_ids if c in found))

    def best_similarity(self, query: QueryRequest, found: Retrieval) -> float | None:
        """Cosine similarity of the question and the closest passage the caller may see with the same
        filters (a full-text or hybrid query's own scores are not similarities); None when none."""
        if not found.hits:
            return None
        if query.mode == "vector":
            return found.hits[0].score
        searcher, _ = self.index()
        vector = found.vector if found.vector is not None else searcher.embed(query.query)
        closest = self._search(
            searcher, query.model_copy(update={"k": 1, "mode": "vector"}), found.groups, vector
        )
        return closest[0].score if closest else None

    def prompt(self):
        """The production version of the RAG prompt, re-read from the registry every PROMPT_TTL_SECONDS."""
        from models.prompt_registry import load_prompt

        now = time.monotonic()
        if self._prompt is None or now - self._prompt[0] > PROMPT_TTL_SECONDS:
            try:
                self._prompt = (now, load_prompt(self.tracking, RAG_PROMPT))
            except LookupError as exc:
                raise ApiError(503, str(exc)) from None
        return self._prompt[1]

    def _search(self, searcher: Searcher, query: QueryRequest, groups: frozenset[str], vector: np.ndarray):
        with request_errors():
            return searcher.search(
                query.query, query.k, query.mode, query.filters, groups=groups, vector=vector
            )

    def _cached(self, scope: CacheScope, vector: np.ndarray) -> Any | None:
        found = self.cache.get(scope, vector)
        (self.metrics.cache_misses if found is None else self.metrics.cache_hits).inc()
        return found

    @staticmethod
    def _scope(
        operation: str, groups: frozenset[str], query: QueryRequest, state: IndexState, extra: Any = None
    ) -> CacheScope:
        index = (state.table_name, state.version)
        return CacheScope.of(operation, groups, query.mode, query.k, query.filters, index, extra=extra)
