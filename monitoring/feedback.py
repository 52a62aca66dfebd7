"""Answer feedback: one Delta row per rating, joined to the audit log by request id, and the gold file
``groundwork eval --from-feedback`` writes from the positive ratings.

The feedback table holds no query text: the text (where ``GROUNDWORK_AUDIT_QUERY_POLICY=text`` kept it)
comes from the audit log when a gold file is made, so the audit policy is the only place that decides.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake
from deltalake.exceptions import TableNotFoundError

from resources.lakehouse import commit_retried, delta_dataset

FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("feedback_id", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("at", pa.timestamp("us", tz="UTC")),
        pa.field("caller", pa.string()),
        pa.field("endpoint", pa.string()),
        pa.field("rating", pa.string()),
        pa.field("relevant_chunk_ids", pa.list_(pa.string())),
        pa.field("wrong_chunk_ids", pa.list_(pa.string())),
        pa.field("relevant_paths", pa.list_(pa.string())),
        pa.field("comment", pa.string()),
        pa.field("table_version", pa.int64()),
    ]
)
RATEABLE_ENDPOINTS = ("POST /search", "POST /answer")


def record_feedback(uri: str, row: dict, storage_options: dict[str, str] | None = None) -> None:
    """Append one rating (synchronously: the caller is told it is stored)."""
    record = {name: row.get(name) for name in FEEDBACK_SCHEMA.names}
    record["at"] = record["at"] or datetime.now(UTC)
    table = pa.Table.from_pylist([record], schema=FEEDBACK_SCHEMA)
    commit_retried(
        uri,
        lambda: write_deltalake(
            uri, table, mode="append", schema_mode="merge", storage_options=storage_options or None
        ),
    )


def read_feedback(uri: str, storage_options: dict[str, str] | None = None) -> list[dict]:
    try:
        return delta_dataset(uri, storage_options).to_table().to_pylist()
    except TableNotFoundError:
        return []


def gold_from_feedback(
    feedback_uri: str, audit_uri: str, storage_options: dict[str, str] | None = None
) -> tuple[list[dict], dict[str, int]]:
    """Gold entries ``{"query", "relevant"}`` from the positive ratings, one per distinct query (their
    relevant paths merged), and counts of what was left out and why."""
    from serving.audit import read_audit

    feedback = read_feedback(feedback_uri, storage_options)
    try:
        audit = {r["request_id"]: r for r in read_audit(audit_uri, storage_options).to_pylist()}
    except TableNotFoundError:
        audit = {}
    skipped = {"negative": 0, "no_query_text": 0, "no_relevant_path": 0, "not_audited": 0}
    by_query: dict[str, list[str]] = {}
    for row in sorted(feedback, key=lambda r: r["at"]):
        if row["rating"] != "up":
            skipped["negative"] += 1
            continue
        audited = audit.get(row["request_id"])
        if audited is None:
            skipped["not_audited"] += 1
        elif not audited.get("query"):  # the audit policy kept only the hash
            skipped["no_query_text"] += 1
        elif not row["relevant_paths"]:
            skipped["no_relevant_path"] += 1
        else:
            paths = by_query.setdefault(audited["query"].strip(), [])
            paths.extend(p for p in row["relevant_paths"] if p not in paths)
    return [{"query": q, "relevant": paths} for q, paths in by_query.items()], skipped


def write_gold(entries: list[dict], path: Path) -> None:
    """JSON lines, the format ``load_gold`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
