"""What /metrics exports (Prometheus): requests, latency, cache, audit, injection flags, index version, and
for answers: tokens, generation and embedding seconds per key and backend, tokens saved by the cache,
generator calls by outcome, circuit breaker states, requests refused by the per-key limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from serving.search import Searcher


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "groundwork_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "groundwork_request_seconds",
            "HTTP request latency",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.cache_hits = Counter("groundwork_cache_hits", "Semantic cache hits", registry=r)
        self.cache_misses = Counter("groundwork_cache_misses", "Semantic cache misses", registry=r)
        self.cache_hit_ratio = Gauge("groundwork_cache_hit_ratio", "Semantic cache hit rate", registry=r)
        self.injection_flags = Counter(
            "groundwork_injection_flagged_passages",
            "Returned passages flagged as prompt injection",
            registry=r,
        )
        self.audit_written = Gauge("groundwork_audit_records_written", "Audit records written", registry=r)
        self.audit_dropped = Gauge("groundwork_audit_records_dropped", "Audit records dropped", registry=r)
        self.query_batch_size = Histogram(
            "groundwork_query_batch_size",
            "Queries embedded together in one batch (serving/batching.py)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.query_queue_depth = Gauge(
            "groundwork_query_queue_depth", "Queries waiting to be embedded", registry=r
        )
        self.index_version = Gauge(
            "groundwork_index_version", "LanceDB version of the active table", registry=r
        )
        self.answer_tokens = Counter(
            "groundwork_answer_tokens",
            "Generator tokens by API key, backend and kind (prompt, completion)",
            ["key", "backend", "kind"],
            registry=r,
        )
        self.tokens_saved = Counter(
            "groundwork_answer_tokens_saved",
            "Tokens semantic-cache hits did not spend again",
            ["key"],
            registry=r,
        )
        self.generation_seconds = Counter(
            "groundwork_generation_seconds",
            "Seconds spent generating answers",
            ["key", "backend"],
            registry=r,
        )
        self.embedding_seconds = Counter(
            "groundwork_embedding_seconds", "Seconds spent embedding queries", ["key"], registry=r
        )
        self.generator_calls = Counter(
            "groundwork_generator_calls",
            "Backend calls of the answer chain by outcome (answered, failed, timeout, circuit_open)",
            ["backend", "outcome"],
            registry=r,
        )
        self.limited = Counter(
            "groundwork_rate_limited",
            "Requests refused 429 by a per-key limit",
            ["key", "reason"],
            registry=r,
        )

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """One request answered."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)


class FilterPlanCollector:
    """Exports ``Searcher.filter_plans``: how often the access filter ran after the vector search, fell
    back to a prefilter, or ran before it (a rising fallback share means the overfetch is too small)."""

    def __init__(self, searcher: Callable[[], Searcher | None]):
        self.searcher = searcher  # the service's searcher, once it has one

    def collect(self):
        family = CounterMetricFamily(
            "groundwork_search_filter_plans", "Vector queries by how their filter ran", labels=["plan"]
        )
        searcher = self.searcher()
        for plan, count in sorted(searcher.filter_plans.items() if searcher else ()):
            family.add_metric([plan], count)
        yield family


class BreakerCollector:
    """Exports each answer backend's circuit breaker: its state (1 on the current one) and how often it
    opened."""

    def __init__(self, breakers: Callable[[], dict]):
        self.breakers = breakers  # backend name → serving.resilience.CircuitBreaker

    def collect(self):
        state = GaugeMetricFamily(
            "groundwork_circuit_breaker_state",
            "Circuit breaker of each answer backend",
            labels=["backend", "state"],
        )
        opened = CounterMetricFamily(
            "groundwork_circuit_breaker_opened",
            "Times a backend's circuit breaker opened",
            labels=["backend"],
        )
        for name, breaker in sorted(self.breakers().items()):
            current = breaker.state
            for candidate in ("closed", "half_open", "open"):
                state.add_metric([name, candidate], 1.0 if current == candidate else 0.0)
            opened.add_metric([name], breaker.opened)
        yield state
        yield opened


class ConsumerLagCollector:
    """Exports each topic source's consumer lag per partition (messages published, not yet in bronze),
    read from the cluster and the bronze checkpoint at scrape time; a source whose lag cannot be read
    (the cluster not answering) has no sample, and ``groundwork status`` says why."""

    def __init__(self, settings):
        self.settings = settings

    def collect(self):
        from resources.kafka import topic_source_lags

        family = GaugeMetricFamily(
            "groundwork_kafka_consumer_lag",
            "Messages of a topic source published and not yet ingested, per partition",
            labels=["source", "topic", "partition"],
        )
        for row in topic_source_lags(self.settings):
            for partition, lag in sorted((row["lag"] or {}).items()):
                family.add_metric([row["source"], row["topic"], str(partition)], lag)
        yield family
