"""The monitoring Delta tables (delta-rs, no JVM): each evaluation run's metrics, and each check's result.

Both are append-only and shared by concurrent runs, so appends go through ``commit_retried``. Reading them
needs only ``deltalake``: ``groundwork monitor`` stays as lean as ``groundwork status``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
from deltalake import write_deltalake
from deltalake.exceptions import TableNotFoundError

from resources.lakehouse import commit_retried, delta_dataset

HISTORY_SCHEMA = pa.schema(
    [
        pa.field("evaluated_at", pa.timestamp("us", tz="UTC")),
        pa.field("mode", pa.string()),
        pa.field("mrr", pa.float64()),
        pa.field("ndcg", pa.float64()),
        pa.field("recall", pa.float64()),
        pa.field("k", pa.int32()),
        pa.field("hit", pa.float64()),  # hit@k: any relevant document in the top k (null in older rows)
        pa.field("queries", pa.int32()),
        pa.field("model_id", pa.string()),
        pa.field("model_registry_version", pa.string()),
        pa.field("lancedb_table", pa.string()),
        pa.field("lancedb_version", pa.int64()),
        pa.field("gold_sha256", pa.string()),
        pa.field("mlflow_run_id", pa.string()),
        pa.field("dagster_run_id", pa.string()),
    ]
)
RESULTS_SCHEMA = pa.schema(
    [
        pa.field("checked_at", pa.timestamp("us", tz="UTC")),
        pa.field("check_name", pa.string()),
        pa.field("asset", pa.string()),
        pa.field("alert", pa.bool_()),
        pa.field("judged", pa.bool_()),
        pa.field("severity", pa.string()),
        pa.field("summary", pa.string()),
        pa.field("figures", pa.string()),  # JSON: the check's numbers
        pa.field("report", pa.string()),  # path of its HTML report under GROUNDWORK_HOME
        pa.field("run_id", pa.string()),
    ]
)


def _append(uri: str, rows: list[dict], schema: pa.Schema, storage_options: dict[str, str] | None) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    commit_retried(
        uri,
        lambda: write_deltalake(
            uri, table, mode="append", schema_mode="merge", storage_options=storage_options or None
        ),
    )


def _read(uri: str, storage_options: dict[str, str] | None) -> pa.Table | None:
    try:
        return delta_dataset(uri, storage_options).to_table()
    except TableNotFoundError:
        return None


def record_evaluation(
    uri: str,
    metrics_by_mode: dict[str, dict[str, float]],
    run: dict,
    storage_options: dict[str, str] | None = None,
) -> None:
    """One history row per search mode of an evaluation run; ``run`` holds the model and table versions."""
    now = datetime.now(UTC)
    rows = [
        {
            **{name: run.get(name) for name in HISTORY_SCHEMA.names},
            "evaluated_at": run.get("evaluated_at") or now,
            "mode": mode,
            **metrics,
        }
        for mode, metrics in metrics_by_mode.items()
    ]
    _append(uri, rows, HISTORY_SCHEMA, storage_options)


def evaluation_history(uri: str, storage_options: dict[str, str] | None = None) -> list[dict]:
    """Every evaluation row, oldest first."""
    table = _read(uri, storage_options)
    return sorted(table.to_pylist(), key=lambda r: r["evaluated_at"]) if table is not None else []


@dataclass(frozen=True)
class CheckResult:
    """What a monitoring check found: the row it writes and the metadata it shows in Dagster."""

    check_name: str
    asset: str
    alert: bool
    judged: bool
    summary: str
    figures: dict = field(default_factory=dict)
    severity: str = "warn"
    report: str = ""


def record_result(
    uri: str, result: CheckResult, run_id: str, storage_options: dict[str, str] | None = None
) -> None:
    row = {
        "checked_at": datetime.now(UTC),
        "check_name": result.check_name,
        "asset": result.asset,
        "alert": result.alert,
        "judged": result.judged,
        "severity": result.severity,
        "summary": result.summary,
        "figures": json.dumps(result.figures, default=str),
        "report": result.report,
        "run_id": run_id,
    }
    _append(uri, [row], RESULTS_SCHEMA, storage_options)


def latest_results(uri: str, storage_options: dict[str, str] | None = None) -> list[dict]:
    """The newest result of each check, by check name (what `groundwork monitor` shows)."""
    table = _read(uri, storage_options)
    if table is None:
        return []
    newest: dict[str, dict] = {}
    for row in sorted(table.to_pylist(), key=lambda r: r["checked_at"]):
        newest[row["check_name"]] = {**row, "figures": json.loads(row["figures"] or "{}")}
    return sorted(newest.values(), key=lambda r: r["check_name"])


def rejected_runs(uri: str, storage_options: dict[str, str] | None = None) -> set[str]:
    """The evaluation runs (MLflow run ids) the trend check failed: never a baseline."""
    table = _read(uri, storage_options)
    if table is None:
        return set()
    return {
        json.loads(row["figures"] or "{}").get("newest_run")
        for row in table.to_pylist()
        if row["check_name"] == "evaluation_trend" and row["alert"]
    } - {None}
