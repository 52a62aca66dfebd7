"""The audit log: one row per request, written to a Delta table off the request path.

Requests put a record on a bounded queue and return; a background thread appends batches to the
Delta table with delta-rs (``deltalake``, no JVM in the server), one row per request with what an
answer cost (tokens, generation and embedding seconds) and who wrote it. Records hold the caller's key name,
never the key; the query is stored as text or only as its SHA-256, per ``GROUNDWORK_AUDIT_QUERY_POLICY``.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Literal

import pyarrow as pa
from deltalake import write_deltalake
from deltalake.exceptions import TableNotFoundError

from resources.lakehouse import delta_dataset

log = logging.getLogger(__name__)
QueryPolicy = Literal["text", "hash"]
AUDIT_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string()),
        pa.field("at", pa.timestamp("us", tz="UTC")),
        pa.field("caller", pa.string()),
        pa.field("endpoint", pa.string()),
        pa.field("status", pa.int32()),
        pa.field("mode", pa.string()),
        pa.field("k", pa.int32()),
        pa.field("query", pa.string()),
        pa.field("query_sha256", pa.string()),
        pa.field("chunk_ids", pa.list_(pa.string())),
        pa.field("table_version", pa.int64()),
        pa.field("cache_hit", pa.bool_()),
        pa.field("latency_ms", pa.float64()),
        pa.field("error", pa.string()),
        # /answer: who wrote it with which prompt, what it cost (added later: appends merge the schema).
        pa.field("backend", pa.string()),
        pa.field("generator", pa.string()),
        pa.field("generator_version", pa.string()),
        pa.field("prompt_version", pa.int32()),
        pa.field("grounded", pa.bool_()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("tokens_saved", pa.int64()),
        pa.field("generation_seconds", pa.float64()),
        pa.field("embedding_seconds", pa.float64()),
        # Cosine similarity of the query and the closest passage the caller may see, where the request
        # measured it (/answer, and /search in vector mode): the query drift check's unanswered rate.
        pa.field("best_similarity", pa.float64()),
    ]
)


def query_fields(query: str | None, policy: QueryPolicy) -> dict:
    """The query as the policy allows: its text and hash, or only the hash."""
    if query is None:
        return {"query": None, "query_sha256": None}
    digest = hashlib.sha256(query.encode()).hexdigest()
    return {"query": query if policy == "text" else None, "query_sha256": digest}


class AuditLog:
    """Queue in the request path, Delta appends in a daemon thread, batched by size or time."""

    def __init__(
        self,
        uri: str,
        flush_seconds: float = 1.0,
        batch_size: int = 500,
        capacity: int = 50_000,
        storage_options: dict[str, str] | None = None,
    ):
        self.uri = uri
        self.storage_options = storage_options or None  # the pipeline's object-store options
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="audit-log", daemon=True)
        self._thread.start()

    def record(self, **fields) -> None:
        """Never blocks a request: a full queue drops the record and counts it."""
        row = {name: fields.get(name) for name in AUDIT_SCHEMA.names}
        row["at"] = row["at"] or datetime.now(UTC)
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything recorded so far is in the table (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(done, timeout=timeout)
        if not done.wait(timeout):
            raise TimeoutError("audit log did not flush in time")

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(10)

    def _run(self) -> None:
        batch: list[dict] = []
        waiting: list[threading.Event] = []
        last_write = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=self.flush_seconds)
            except queue.Empty:
                item = ...
            if isinstance(item, dict):
                batch.append(item)
            elif isinstance(item, threading.Event):
                waiting.append(item)
            due = time.monotonic() - last_write >= self.flush_seconds
            if batch and (due or item is None or waiting or len(batch) >= self.batch_size):
                self._write(batch)
                batch, last_write = [], time.monotonic()
            for event in waiting:
                event.set()
            waiting = []
            if item is None:
                return

    def _write(self, batch: list[dict]) -> None:
        try:
            write_deltalake(
                self.uri,
                pa.Table.from_pylist(batch, schema=AUDIT_SCHEMA),
                mode="append",
                schema_mode="merge",  # a table written before a column was added gets it
                storage_options=self.storage_options,
            )
            self.written += len(batch)
        except Exception:  # the log must never take the server down; the count shows in /metrics
            self.failed += len(batch)
            log.exception("audit log: could not append %d records", len(batch))


def read_audit(uri: str, storage_options: dict[str, str] | None = None) -> pa.Table:
    """The whole audit table (tests, `groundwork` tooling)."""
    return delta_dataset(uri, storage_options).to_table()


def audited_request(uri: str, request_id: str, storage_options: dict[str, str] | None = None) -> dict | None:
    """The audit record of one request, or None (not written yet, or no such request)."""
    import pyarrow.dataset as ds

    try:
        dataset = delta_dataset(uri, storage_options)
    except TableNotFoundError:
        return None
    rows = dataset.to_table(filter=ds.field("request_id") == request_id).to_pylist()
    return rows[0] if rows else None


def audit_since(uri: str, since: datetime, storage_options: dict[str, str] | None = None) -> pa.Table | None:
    """The audit rows written since ``since`` (the query drift check's window); None without a table."""
    import pyarrow.dataset as ds

    try:
        dataset = delta_dataset(uri, storage_options)
    except TableNotFoundError:
        return None
    return dataset.to_table(filter=ds.field("at") >= pa.scalar(since, pa.timestamp("us", tz="UTC")))


def tokens_spent_since(
    uri: str, since: datetime, storage_options: dict[str, str] | None = None
) -> dict[str, int]:
    """Generated tokens (prompt + completion) per caller since ``since``, from the audit table: where the
    per-key token budgets start when a server starts, so a restart does not reset a day's account."""
    try:
        dataset = delta_dataset(uri, storage_options)
    except TableNotFoundError:
        return {}
    columns = ["caller", "prompt_tokens", "completion_tokens"]
    if not set(columns) <= set(dataset.schema.names):  # a table from before answers were accounted
        return {}
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    since_scalar = pa.scalar(since, pa.timestamp("us", tz="UTC"))
    rows = dataset.to_table(columns=columns, filter=(ds.field("at") >= since_scalar))
    spent = pc.add(pc.fill_null(rows["prompt_tokens"], 0), pc.fill_null(rows["completion_tokens"], 0))
    totals = (
        pa.table({"caller": rows["caller"], "spent": spent}).group_by("caller").aggregate([("spent", "sum")])
    )
    return {
        caller: int(total)
        for caller, total in zip(totals["caller"].to_pylist(), totals["spent_sum"].to_pylist(), strict=True)
        if caller is not None and total
    }
