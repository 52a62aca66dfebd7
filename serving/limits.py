"""Per-key limits: requests per minute (a sliding window) and generated tokens per UTC day.

Both are counted in this server process (several replicas each allow the limit). The audit table keeps
every request's tokens for the durable account, and a server starts the day's token counts from it
(``serving.audit.tokens_spent_since``), so a restart does not hand out a day's budget again. Over a
limit, the request is answered 429 with Retry-After: when the oldest request of the window leaves it,
or at the next UTC midnight.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class LimitExceeded(Exception):
    def __init__(self, message: str, retry_after_s: float, reason: str):
        super().__init__(message)
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.reason = reason


class KeyLimits:
    """``requests_per_minute`` and ``tokens_per_day`` per key name; 0 means no limit."""

    def __init__(
        self,
        requests_per_minute: int = 0,
        tokens_per_day: int = 0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.requests_per_minute = requests_per_minute
        self.tokens_per_day = tokens_per_day
        self.clock = clock
        self.now = now
        self._requests: dict[str, deque[float]] = defaultdict(deque)
        self._tokens: dict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Lock()

    def admit(self, key: str) -> None:
        """Count one request of ``key``, or raise LimitExceeded when its window is full."""
        if not self.requests_per_minute:
            return
        with self._lock:
            now = self.clock()
            window = self._requests[key]
            while window and now - window[0] >= 60.0:
                window.popleft()
            if len(window) >= self.requests_per_minute:
                raise LimitExceeded(
                    f"rate limit: {self.requests_per_minute} requests per minute",
                    60.0 - (now - window[0]),
                    "requests",
                )
            window.append(now)

    def check_budget(self, key: str) -> None:
        """Raise LimitExceeded when ``key`` has used its tokens of the day."""
        if not self.tokens_per_day:
            return
        now = self.now()
        with self._lock:
            used = self._tokens[(key, now.date().isoformat())]
        if used >= self.tokens_per_day:
            midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
            raise LimitExceeded(
                f"token budget: {self.tokens_per_day} tokens per day used up",
                (midnight - now).total_seconds(),
                "tokens",
            )

    def spend(self, key: str, tokens: int) -> int:
        """Add ``tokens`` to today's count of ``key``; today's total."""
        day = self.now().date().isoformat()
        with self._lock:
            for stale in [k for k in self._tokens if k[1] != day]:
                del self._tokens[stale]
            self._tokens[(key, day)] += tokens
            return self._tokens[(key, day)]

    def start_day(self, spent: dict[str, int]) -> None:
        """Today's tokens per key spent before this process started (from the audit table)."""
        day = self.now().date().isoformat()
        with self._lock:
            for key, tokens in spent.items():
                self._tokens[(key, day)] = max(self._tokens[(key, day)], tokens)

    def today_began(self) -> datetime:
        now = self.now()
        return datetime.combine(now.date(), datetime.min.time(), UTC)

    def used_today(self, key: str) -> int:
        with self._lock:
            return self._tokens.get((key, self.now().date().isoformat()), 0)
