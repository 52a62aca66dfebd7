"""Query embeddings of concurrent requests, encoded together (dynamic batching).

Encoding one query at a time on two cores ran the packaged model at about 61 queries/s; in batches of
32 it ran at 422/s. Requests hand their query to the encoding threads and wait: a free one takes what
has queued up, up to ``max_batch``, waiting at most ``window_s`` for the requests already being handled
that have not queued their query yet (none for a request alone), and encodes it in one forward pass per
model. The queue is bounded: when ``max_queue`` queries already wait, a request is refused at
once (``Overloaded``, answered 503 with Retry-After) instead of waiting without bound.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

Encode = Callable[[list[str]], np.ndarray]


class Overloaded(RuntimeError):
    """Too many queries already wait to be embedded; retry after ``retry_after_s``."""

    def __init__(self, waiting: int, retry_after_s: int):
        super().__init__(f"overloaded: {waiting} queries are waiting to be embedded; retry shortly")
        self.retry_after_s = retry_after_s


@dataclass
class _Coming:
    """A request on its way to the encoder; ``arrived`` once it queued its query or turned away."""

    arrived: bool = False


_coming: contextvars.ContextVar[_Coming | None] = contextvars.ContextVar("groundwork_coming", default=None)


@dataclass
class _Pending:
    key: str  # the model's id: one batch per model
    encode: Encode
    text: str
    result: Future = field(default_factory=Future)


class QueryBatcher:
    """One thread that embeds every request's query, in batches of whatever is waiting."""

    def __init__(
        self,
        max_batch: int = 32,
        window_s: float = 0.001,
        max_queue: int = 256,
        on_batch: Callable[[int, int], None] | None = None,
        workers: int = 1,
    ):
        """``on_batch(size, still_waiting)`` is called after each batch (the metrics); ``workers`` threads
        encode batches side by side (a forward pass releases the GIL in its tensor operations)."""
        if max_batch < 1 or max_queue < 1 or workers < 1:
            raise ValueError("max_batch, max_queue and workers must be at least 1")
        self.workers = workers
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_queue)
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        self._seconds_per_query = 0.005  # refined as batches run; sizes Retry-After
        self._on_the_way = 0  # requests inside ``coming()`` that have not queued a query (nor turned away)
        self._count_lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    @contextmanager
    def coming(self) -> Iterator[None]:
        """Around a request that may embed a query (from its first byte): while such requests are on
        their way, a batch waits for them (``window_s`` at most), so concurrent requests share a forward
        pass; with none on the way (a request alone) a batch waits for nobody. The context follows the
        request into its endpoint's thread (a context variable)."""
        token = _Coming()
        reset = _coming.set(token)
        self._count(+1)
        try:
            yield
        finally:
            _coming.reset(reset)
            self.arrived(token)

    def arrived(self, token: _Coming | None = None) -> None:
        """This request will not (or no longer) be on its way: its query is queued, or it needs none."""
        token = token or _coming.get()
        if token is not None and not token.arrived:
            token.arrived = True
            self._count(-1)

    def _count(self, change: int) -> None:
        with self._count_lock:
            self._on_the_way += change

    def encode(self, key: str, encode: Encode, text: str, timeout_s: float = 30.0) -> np.ndarray:
        """``text``'s vector, encoded with ``encode`` in a batch with the other waiting queries of ``key``."""
        return self.submit(key, encode, text).result(timeout=timeout_s)

    def submit(self, key: str, encode: Encode, text: str) -> Future:
        """Queue ``text`` and return the future of its vector at once (an async endpoint awaits it on the
        event loop instead of blocking a thread); ``Overloaded`` when the queue is full."""
        self._ensure_started()
        self.arrived()
        pending = _Pending(key, encode, text)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            drain_s = self.max_queue * self._seconds_per_query
            raise Overloaded(self.max_queue, max(1, round(drain_s + 0.5))) from None
        return pending.result

    def close(self) -> None:
        with self._start_lock:
            for _ in self._threads:
                self._queue.put(None)
            for thread in self._threads:
                thread.join(timeout=5)
            self._threads = []

    def _ensure_started(self) -> None:
        if not self._threads:
            with self._start_lock:
                if not self._threads:
                    self._threads = [
                        threading.Thread(target=self._run, name=f"query-encoder-{n}", daemon=True)
                        for n in range(self.workers)
                    ]
                    for thread in self._threads:
                        thread.start()

    def _collect(self, first: _Pending) -> list[_Pending]:
        batch = [first]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._on_the_way <= 0:
                    break
                try:  # in short steps: a request that turns away (no query to embed) ends the wait
                    item = self._queue.get(timeout=min(remaining, 0.0005))
                except queue.Empty:
                    continue
            if item is None:  # closing: finish this batch, then stop (the marker stays for this worker)
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            # A future cancelled while it waited (its request gave up) is left out; the others can no
            # longer be cancelled, so their results can always be set.
            batch = [item for item in self._collect(first) if item.result.set_running_or_notify_cancel()]
            if not batch:
                continue
            started = time.perf_counter()
            by_model: dict[str, list[_Pending]] = {}
            for item in batch:
                by_model.setdefault(item.key, []).append(item)
            for items in by_model.values():
                try:
                    vectors = items[0].encode([item.text for item in items])
                except BaseException as exc:  # every waiting request gets the error, the thread goes on
                    for item in items:
                        item.result.set_exception(exc)
                    continue
                for item, vector in zip(items, vectors, strict=True):
                    item.result.set_result(vector)
            spent = (time.perf_counter() - started) / len(batch)
            self._seconds_per_query = 0.8 * self._seconds_per_query + 0.2 * spent
            if self.on_batch is not None:
                self.on_batch(len(batch), self._queue.qsize())
