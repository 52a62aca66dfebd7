"""Query drift from the audit log: the newest day's /search and /answer queries against the days before.

Two figures: the unanswered rate (share of queries whose best similarity is under the calibrated "no
relevant source" threshold, GROUNDWORK_ANSWER_MIN_SIMILARITY) and the shift of the query centroid
(embedding drift of the day's query vectors against the reference window's). Query vectors are embedded
again from the audit log's text, so the centroid needs ``GROUNDWORK_AUDIT_QUERY_POLICY=text``; under
``hash`` only the unanswered rate is judged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from monitoring.drift import Drift, embedding_drift, unanswered_rate

QUERY_ENDPOINTS = ("POST /search", "POST /answer")
MAX_QUERIES_EMBEDDED = 2000  # per side: a sample is enough for a centroid and a KS test


@dataclass(frozen=True)
class QueryAssessment:
    alert: bool
    judged: bool
    summary: str
    figures: dict
    centroid: Drift | None
    unanswered: tuple[np.ndarray, np.ndarray]  # best similarities (reference, current), for the report


def _sample(texts: list[str], seed: int) -> list[str]:
    if len(texts) <= MAX_QUERIES_EMBEDDED:
        return texts
    picked = np.random.default_rng(seed).choice(len(texts), MAX_QUERIES_EMBEDDED, replace=False)
    return [texts[i] for i in sorted(picked)]


def assess_queries(
    audit: pa.Table | None,
    now: datetime,
    *,
    threshold: float,
    unanswered_max: float,
    reference_days: int,
    embed: Callable[[Sequence[str]], np.ndarray] | None,
    alpha: float,
    min_distance: float,
    min_rows: int,
) -> QueryAssessment:
    """Judge the last 24 hours before ``now`` against the ``reference_days`` before them."""
    day_start, reference_start = now - timedelta(days=1), now - timedelta(days=1 + reference_days)
    rows = [] if audit is None else audit.to_pylist()
    rows = [
        r
        for r in rows
        if r["endpoint"] in QUERY_ENDPOINTS and r["status"] == 200 and reference_start <= r["at"] <= now
    ]
    current = [r for r in rows if r["at"] >= day_start]
    reference = [r for r in rows if r["at"] < day_start]
    similarity = "best_similarity"
    cur_sims = [r.get(similarity) for r in current]
    ref_sims = [r.get(similarity) for r in reference]
    rate, counted = unanswered_rate(cur_sims, threshold)
    ref_rate, _ = unanswered_rate(ref_sims, threshold)
    figures: dict = {
        "queries": len(current),
        "reference_queries": len(reference),
        "unanswered_rate": round(rate, 4),
        "unanswered_counted": counted,
        "reference_unanswered_rate": round(ref_rate, 4),
        "threshold": threshold,
        "unanswered_max": unanswered_max,
    }
    unanswered_judged = counted >= min_rows
    unanswered_alert = unanswered_judged and rate > unanswered_max
    parts = [
        f"unanswered {rate:.1%} of {counted} (alerts over {unanswered_max:.0%})"
        if unanswered_judged
        else f"unanswered rate not judged: {counted} queries with a similarity (needs {min_rows})"
    ]
    centroid = None
    cur_texts = [r["query"] for r in current if r.get("query")]
    ref_texts = [r["query"] for r in reference if r.get("query")]
    if (current or reference) and not (cur_texts or ref_texts):
        parts.append(
            "centroid not judged: the audit log keeps no query text (GROUNDWORK_AUDIT_QUERY_POLICY=hash)"
        )
    elif embed is None:
        parts.append("centroid not judged: no embedding model")
    elif len(cur_texts) < min_rows or len(ref_texts) < 2 * min_rows:
        parts.append(f"centroid not judged: {len(cur_texts)} current, {len(ref_texts)} reference queries")
    else:
        centroid = embedding_drift(
            embed(_sample(ref_texts, 1)),
            embed(_sample(cur_texts, 2)),
            alpha=alpha,
            min_distance=min_distance,
            min_rows=min_rows,
        )
        figures.update(centroid.figures("centroid_"))
        parts.append(f"query centroid: {centroid.detail}")
    alert = unanswered_alert or bool(centroid and centroid.alert)
    judged = unanswered_judged or bool(centroid and centroid.judged)
    known = lambda values: np.asarray([v for v in values if v is not None], dtype=float)  # noqa: E731
    return QueryAssessment(
        alert, judged, "; ".join(parts), figures, centroid, (known(ref_sims), known(cur_sims))
    )
