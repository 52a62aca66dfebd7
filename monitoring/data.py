"""Structured-data drift: a silver table's newest day of events against its reference window.

The window is by the source's event time (``event_time`` in sources.yaml): the newest day with events is
the current side, the ``reference_days`` before it the reference. Compared columns are the contract's
numbers (int, long, double, decimal) and its strings with an ``allowed`` set (categories); keys, PII and
free text are not compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc

from assets.structured.contracts import SourceContract
from monitoring.drift import Drift, categorical_drift, numeric_drift

NUMERIC_TYPES = ("int", "long", "double", "decimal", "float")


def compared_columns(contract: SourceContract) -> dict[str, str]:
    """Column → ``numeric`` or ``categorical``, for the columns worth comparing."""
    keys = set(contract.primary_key) | {r.column for r in contract.references}
    out = {}
    for column in contract.columns:
        if column.name in keys or column.pii or column.name == contract.event_time:
            continue
        if column.type.startswith(NUMERIC_TYPES):
            out[column.name] = "numeric"
        elif column.type in ("string", "boolean") and (column.allowed or column.type == "boolean"):
            out[column.name] = "categorical"
    return out


@dataclass(frozen=True)
class TableDrift:
    alert: bool
    judged: bool
    summary: str
    figures: dict
    columns: dict[str, Drift]


def assess_table(
    rows: pa.Table,
    event_time: str,
    columns: dict[str, str],
    *,
    reference_days: int,
    alpha: float,
    psi_max: float,
    min_rows: int,
) -> TableDrift:
    """Each compared column of the newest event day against the ``reference_days`` before it."""
    if rows.num_rows == 0 or event_time not in rows.column_names:
        return TableDrift(False, False, "no rows with an event time to compare", {}, {})
    times = rows[event_time]
    newest = pc.max(times).as_py()
    if newest is None:
        return TableDrift(False, False, "no rows with an event time to compare", {}, {})
    day_start = newest.replace(hour=0, minute=0, second=0, microsecond=0)
    reference_start = day_start - timedelta(days=reference_days)
    scalar = lambda v: pa.scalar(v, times.type)  # noqa: E731
    current = rows.filter(pc.greater_equal(times, scalar(day_start)))
    reference = rows.filter(
        pc.and_(pc.greater_equal(times, scalar(reference_start)), pc.less(times, scalar(day_start)))
    )
    results: dict[str, Drift] = {}
    for name, kind in columns.items():
        if name not in rows.column_names:
            continue
        judge = numeric_drift if kind == "numeric" else categorical_drift
        ref, cur = reference[name].to_pylist(), current[name].to_pylist()
        if kind == "numeric":
            ref, cur = (
                [None if v is None else float(v) for v in ref],
                [None if v is None else float(v) for v in cur],
            )
        results[name] = judge(ref, cur, alpha=alpha, psi_max=psi_max, min_rows=min_rows)
    drifted = [n for n, d in results.items() if d.alert]
    judged = any(d.judged for d in results.values())
    figures: dict = {"current_day": day_start.date().isoformat(), "current_rows": current.num_rows}
    figures["reference_rows"] = reference.num_rows
    for name, drift in results.items():
        figures[f"{name}_psi"] = round(drift.effect, 4)
        figures[f"{name}_p_value"] = drift.p_value
    if drifted:
        summary = "drifted: " + "; ".join(f"{n} ({results[n].detail})" for n in drifted)
    elif judged:
        summary = f"no drift in {sum(d.judged for d in results.values())} columns"
    else:
        summary = (
            f"not judged: {current.num_rows} current, {reference.num_rows} reference rows (needs {min_rows})"
        )
    return TableDrift(bool(drifted), judged, summary, figures, results)
