"""Per-backend resilience for /answer: retries with backoff and jitter for transient errors only, and a
circuit breaker that stops calling a backend that keeps failing or timing out until a cool-down passes.

Retries wrap the breaker (each attempt is one call it counts), so a backend that fails during a retry
loop opens the breaker and the loop stops there instead of spending its remaining attempts.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")


class BackendError(Exception):
    """A backend call failed; ``transient`` errors (connect errors, timeouts, 429, 5xx) may be retried."""

    transient = False
    timeout = False


class TransientError(BackendError):
    transient = True

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s  # the backend's own Retry-After, when it sent one


class BackendTimeout(TransientError):
    timeout = True


class PermanentError(BackendError):
    """A 4xx other than 429, or an answer that is not what the API promises: retrying would repeat it."""


class CircuitOpen(BackendError):
    """The breaker refused the call without trying it."""


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


BREAKER_LEVEL = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures, or when at least ``timeout_rate`` of the
    last ``window`` calls (at least ``failures`` calls, or a full window) timed out; open → half-open
    after ``cooldown_s``, where one probe decides: a success closes it, a failure opens it again."""

    def __init__(
        self,
        failures: int = 5,
        timeout_rate: float = 0.5,
        window: int = 20,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.failures = failures
        self.timeout_rate = timeout_rate
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._outcomes: deque[bool] = deque(maxlen=window)  # True: the call timed out
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False
        self._lock = threading.Lock()
        self.opened = 0  # how many times it opened (metrics)

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self._opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """Whether a call may go ahead now (in half-open, only the one probe)."""
        with self._lock:
            state = self._state()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def retry_in(self) -> float:
        """Seconds until the cool-down ends (0 when closed)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.cooldown_s - (self.clock() - self._opened_at))

    def success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._outcomes.append(False)
            self._opened_at, self._probing = None, False

    def failure(self, timed_out: bool = False) -> None:
        with self._lock:
            self._consecutive += 1
            self._outcomes.append(timed_out)
            timeouts = sum(self._outcomes)
            enough = len(self._outcomes) >= min(self.failures, self._outcomes.maxlen or self.failures)
            too_slow = enough and timeouts / len(self._outcomes) >= self.timeout_rate
            if self._probing or self._consecutive >= self.failures or too_slow:
                if self._opened_at is None or self._probing:
                    self.opened += 1
                self._opened_at, self._probing = self.clock(), False
                self._outcomes.clear()


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first, waiting ``base_s * 2**n`` (capped at ``max_s``) times a
    random factor in [0.5, 1] ("equal jitter"), so clients that failed together do not retry together."""

    retries: int = 2
    base_s: float = 0.2
    max_s: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_s, self.base_s * 2**attempt)
        return ceiling * (0.5 + 0.5 * (rng or random).random())


def call_with_retries(
    call: Callable[[], T],
    breaker: CircuitBreaker,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    on_attempt: Callable[[int], None] | None = None,
) -> tuple[T, int]:
    """``call``'s result and the attempts it took. Transient errors are retried while attempts and the
    breaker allow, after the backoff or the backend's Retry-After if longer; a Retry-After beyond the
    policy's longest wait ends the attempts at once (the chain moves on instead of holding the request).
    A permanent error, or the last attempt's error, is raised (with ``attempts`` set)."""
    attempt, last = 0, None
    while True:
        if not breaker.allow():  # opened before the call, or by this loop's own failures
            raise _with_attempts(last or CircuitOpen("circuit open"), attempt)
        attempt += 1
        if on_attempt is not None:
            on_attempt(attempt)
        try:
            result = call()
        except BackendError as exc:
            breaker.failure(timed_out=exc.timeout)
            if not exc.transient or attempt > policy.retries:
                raise _with_attempts(exc, attempt) from None
            wait = policy.delay(attempt - 1)
            hinted = getattr(exc, "retry_after_s", None)
            if hinted is not None:
                if hinted > policy.max_s:  # asks for longer than a request may wait: the next backend
                    raise _with_attempts(exc, attempt) from None
                wait = max(wait, hinted)
            last = exc
            sleep(wait)
            continue
        breaker.success()
        return result, attempt


def _with_attempts(exc: BackendError, attempts: int) -> BackendError:
    exc.attempts = attempts  # type: ignore[attr-defined]
    return exc
