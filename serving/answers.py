"""The generator chain as the settings configure it, rebuilt when the registry's ``champion`` moves: one
endpoint backend per configured URL, the local model the registry names, the extractive answer, and one
circuit breaker per backend that lives as long as the server (its state is in /health and /metrics).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from resources.settings import ANSWER_BACKENDS, Settings
from serving.chain import GeneratorChain, Link, Step
from serving.generators import Backend, ExtractiveBackend, LocalBackend, OpenAIBackend
from serving.resilience import CircuitBreaker, RetryPolicy

log = logging.getLogger("groundwork.serving")
BACKENDS = ANSWER_BACKENDS
FULL_CHAIN = BACKENDS
ENDPOINTS_ONLY = ("primary", "fallback")
REGISTRY_TTL_SECONDS = 10.0  # how long the generator's champion is reused before the alias is re-read


def chain_names(setting: str) -> tuple[str, ...]:
    """The backends a ``GROUNDWORK_ANSWER_CHAIN`` value names, in order (ValueError for an unknown one)."""
    names = tuple(n.strip() for n in setting.split(",") if n.strip())
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown answer backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    return names


@dataclass(frozen=True)
class LocalChampion:
    """The registry's answer about the local generator: its backend, or why there is none."""

    backend: LocalBackend | None
    reason: str | None


class Generators:
    """Builds the chain for each answer from the settings and the registry (the champion re-read every
    REGISTRY_TTL_SECONDS); backends and breakers are made once and reused."""

    def __init__(self, settings: Settings, tracking=None, on_call=None):
        self.settings = settings
        self.tracking = tracking
        self.on_call = on_call
        self.explicit = chain_names(settings.answer_chain)
        s = settings
        self.policy = RetryPolicy(s.llm_retries, s.llm_backoff_seconds, s.llm_backoff_max_seconds)
        self.breakers: dict[str, CircuitBreaker] = {}
        self.endpoints: dict[str, OpenAIBackend] = {}
        for name, url, model, key in (
            ("primary", s.llm_base_url, s.llm_model, s.llm_api_key),
            ("fallback", s.llm_fallback_base_url, s.llm_fallback_model, s.llm_fallback_api_key),
        ):
            if url:
                secret = key.get_secret_value() if key is not None else None
                self.endpoints[name] = OpenAIBackend(name, url, model, secret, s.llm_timeout_seconds)
                self.breaker(name)
        self.extractive = ExtractiveBackend()
        self._local: tuple[float, LocalChampion] | None = None
        self._local_models: dict[str, LocalBackend] = {}

    def breaker(self, name: str) -> CircuitBreaker:
        if name not in self.breakers:
            s = self.settings
            self.breakers[name] = CircuitBreaker(
                s.llm_breaker_failures,
                s.llm_breaker_timeout_rate,
                s.llm_breaker_window,
                s.llm_breaker_cooldown_seconds,
            )
        return self.breakers[name]

    def states(self) -> dict[str, str]:
        return {name: str(breaker.state) for name, breaker in sorted(self.breakers.items())}

    def local(self) -> LocalChampion:
        """The champion of the generator registered model, as a backend (re-read every TTL)."""
        now = time.monotonic()
        if self._local is None or now - self._local[0] > REGISTRY_TTL_SECONDS:
            self._local = (now, self._resolve_local())
        return self._local[1]

    def _resolve_local(self) -> LocalChampion:
        if self.tracking is None:
            return LocalChampion(None, "no model registry")
        from models.generator_registry import resolve_generator
        from resources.llamacpp import LocalModel

        try:
            found = resolve_generator(self.tracking, self.settings.generator_registered_model)
        except LookupError as exc:
            return LocalChampion(None, str(exc))
        except Exception as exc:  # the registry unreachable: the chain goes on without the local model
            log.warning("cannot resolve the local generator: %s", type(exc).__name__)
            return LocalChampion(None, f"model registry unavailable ({type(exc).__name__})")
        backend = self._local_models.get(found.generator_id)
        if backend is None:
            model = LocalModel(found.path, threads=self.settings.generator_threads)
            backend = LocalBackend(
                model, found.generator_id, found.version, self.settings.generator_timeout_seconds, found.model
            )
            self._local_models = {found.generator_id: backend}  # a moved champion replaces the old one
            self.breaker("local")
        return LocalChampion(backend, None)

    def chain(self) -> GeneratorChain | None:
        """The chain for one answer; None when the chain is the default one and nothing in it can write
        an answer (no endpoint set, no local generator registered): /answer then returns the prompt."""
        names = self.explicit
        local = None
        if not names:
            local = self.local()
            names = FULL_CHAIN if local.backend is not None else ENDPOINTS_ONLY
        entries: list[Link | Step] = []
        for name in names:
            backend: Backend | None
            if name in ("primary", "fallback"):
                backend, reason = self.endpoints.get(name), "not configured"
            elif name == "local":
                local = local or self.local()
                backend, reason = local.backend, local.reason
            else:
                entries.append(Link(self.extractive, None, self.policy))
                continue
            if backend is None:
                entries.append(Step(name, None, "skipped", reason))
            else:
                entries.append(Link(backend, self.breaker(name), self.policy))
        chain = GeneratorChain(entries, on_call=self.on_call)
        if not chain.links and not self.explicit:
            return None
        return chain

    @staticmethod
    def signature(chain: GeneratorChain | None) -> tuple:
        """What the answer cache keys on: the backends that may answer, by generator."""
        if chain is None:
            return ()
        return tuple((link.backend.name, link.backend.generator) for link in chain.links)
