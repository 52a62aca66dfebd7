"""The generator chain behind /answer: the primary backend, then the fallbacks, each behind its own
retries and circuit breaker, and last (when configured) the extractive answer that needs no model.

The chain reports every backend it passed: answered, failed (why, after how many attempts) or skipped
(not configured, circuit open). A streamed answer that fails mid-way is restarted on the next backend,
and the caller is told to drop the partial text (``on_restart``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from serving.generators import Backend, Completion, GenerationRequest, TokenSink
from serving.resilience import (
    BackendError,
    CircuitBreaker,
    CircuitOpen,
    PermanentError,
    RetryPolicy,
    call_with_retries,
)

Outcome = Literal["answered", "failed", "skipped"]


@dataclass(frozen=True)
class Step:
    """What one backend of the chain did for a request."""

    backend: str
    generator: str | None
    outcome: Outcome
    reason: str | None = None
    attempts: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Link:
    """A backend in the chain; ``breaker`` None for one that cannot fail (the extractive answer)."""

    backend: Backend
    breaker: CircuitBreaker | None
    policy: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class Generation:
    completion: Completion
    backend: Backend
    seconds: float
    trail: list[Step]


class NoBackendAnswered(Exception):
    """Every backend failed or was skipped; the message says why, backend by backend."""

    def __init__(self, trail: list[Step]):
        self.trail = trail
        reasons = "; ".join(f"{s.backend}: {s.reason}" for s in trail)
        super().__init__(f"no generator answered ({reasons})")


def _failure_reason(exc: BackendError) -> str:
    attempts = getattr(exc, "attempts", 1)
    return f"{exc}" + (f" after {attempts} attempts" if attempts > 1 else "")


class GeneratorChain:
    """The backends in order: a Link to try, or the Step of one named in the chain but not set up."""

    def __init__(
        self,
        entries: list[Link | Step],
        sleep: Callable[[float], None] = time.sleep,
        on_call: Callable[[str, str], None] | None = None,
    ):
        self.entries = entries
        self.sleep = sleep
        self.on_call = on_call or (lambda backend, outcome: None)

    @property
    def links(self) -> list[Link]:
        return [entry for entry in self.entries if isinstance(entry, Link)]

    def generate(
        self,
        request: GenerationRequest,
        on_token: TokenSink | None = None,
        on_restart: Callable[[str, str], None] | None = None,
    ) -> Generation:
        trail: list[Step] = []
        for link in self.entries:
            if isinstance(link, Step):
                trail.append(link)
                continue
            backend = link.backend
            emitted: list[str] = []

            def call(backend: Backend = backend, emitted: list[str] = emitted) -> Completion:
                if on_token is None:
                    return backend.complete(request)

                def sink(token: str) -> None:
                    emitted.append(token)
                    on_token(token)

                try:
                    return backend.complete(request, sink)
                except BackendError as exc:
                    if emitted and exc.transient:  # tokens are out: no retry, the next backend restarts
                        cut = PermanentError(f"stream cut ({exc})")
                        cut.timeout = exc.timeout  # a stream that stalled still counts as a timeout
                        raise cut from None
                    raise

            started = time.perf_counter()
            try:
                if link.breaker is None:
                    completion, attempts = call(), 1
                else:
                    completion, attempts = call_with_retries(call, link.breaker, link.policy, self.sleep)
            except BackendError as exc:
                seconds = time.perf_counter() - started
                attempts = getattr(exc, "attempts", 1)
                if isinstance(exc, CircuitOpen) and attempts == 0:  # refused before any attempt
                    outcome, reason = "skipped", "circuit open"
                else:
                    outcome, reason = "failed", _failure_reason(exc)
                trail.append(Step(backend.name, backend.generator, outcome, reason, attempts, seconds))
                self.on_call(
                    backend.name,
                    "circuit_open" if outcome == "skipped" else "timeout" if exc.timeout else outcome,
                )
                if emitted and on_restart is not None:
                    on_restart(backend.name, reason)
                continue
            seconds = time.perf_counter() - started
            trail.append(Step(backend.name, backend.generator, "answered", None, attempts, seconds))
            self.on_call(backend.name, "answered")
            return Generation(completion, backend, seconds, trail)
        raise NoBackendAnswered(trail)
