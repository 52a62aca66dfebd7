"""Failed runs, recorded with their cause in the ``pipeline_failures`` Delta table.

A run failure sensor (run by the Dagster daemon) writes one row per failed step: run, job, step, error
type, message, the cause and how many attempts it had. It writes with delta-rs, so no JVM starts in the
daemon; ``groundwork status`` reads the latest rows back.
"""

from datetime import UTC, datetime

import pyarrow as pa
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    RunFailureSensorContext,
    run_failure_sensor,
)
from deltalake import write_deltalake

from resources.lakehouse import read_table, storage_options_for, table_version
from resources.settings import Settings, get_settings

FAILURES_TABLE = "pipeline_failures"
FAILURE_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("job_name", pa.string()),
        pa.field("step_key", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("message", pa.string()),
        pa.field("cause", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("failed_at", pa.timestamp("us", tz="UTC")),
    ]
)


def failures_path(settings: Settings) -> str:
    return f"{settings.delta_uri.rstrip('/')}/{FAILURES_TABLE}"


def _first_line(text: str | None, limit: int = 2000) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:limit] if text else ""


def failure_rows(instance: DagsterInstance, run_id: str, job_name: str, run_message: str) -> list[dict]:
    """One row per failed step of the run (with its user-code cause), or one for the run itself."""
    logs = instance.all_logs(run_id)
    attempts: dict[str, int] = {}
    rows = []
    for record in logs:
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            attempts[event.step_key] = attempts.get(event.step_key, 0) + 1
        if event.event_type != DagsterEventType.STEP_FAILURE:
            continue
        data = event.step_failure_data
        error = data.error
        user = data.user_failure_data
        if user is not None and user.metadata.get("error_type") is not None:
            # Raised by @transient_retries: the original error's type and message.
            error_type = str(user.metadata["error_type"].value)
            cause = str(user.metadata["error"].value)
        elif error is not None and error.cause is not None:
            error_type, cause = error.cause.cls_name, _first_line(error.cause.message)
        else:
            error_type = error.cls_name if error else "unknown"
            cause = _first_line(error.message if error else "")
        rows.append(
            {
                "run_id": run_id,
                "job_name": job_name,
                "step_key": event.step_key,
                "error_type": error_type,
                "message": _first_line(user.description if user else (error.message if error else "")),
                "cause": cause,
                "attempts": attempts.get(event.step_key, 1),
                "failed_at": datetime.fromtimestamp(record.timestamp, tz=UTC),
            }
        )
    if not rows:
        rows.append(
            {
                "run_id": run_id,
                "job_name": job_name,
                "step_key": None,
                "error_type": "run_failure",
                "message": _first_line(run_message),
                "cause": _first_line(run_message),
                "attempts": 1,
                "failed_at": datetime.now(UTC),
            }
        )
    return rows


def record_failures(settings: Settings, rows: list[dict]) -> int:
    """Append the rows to ``pipeline_failures`` (created on first use); returns the table's version."""
    path = failures_path(settings)
    write_deltalake(
        path,
        pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA),
        mode="append",
        storage_options=storage_options_for(path, settings.object_store_options()),
    )
    return table_version(path, settings.object_store_options()) or 0


def recent_failures(settings: Settings, limit: int = 10) -> list[dict]:
    """The latest failures, newest first; empty before the first one."""
    path = failures_path(settings)
    if table_version(path, settings.object_store_options()) is None:
        return []
    rows = read_table(path, storage_options=settings.object_store_options()).to_pylist()
    return sorted(rows, key=lambda r: r["failed_at"], reverse=True)[:limit]


@run_failure_sensor(
    name="record_pipeline_failures",
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    description="Writes each failed run's failed steps, error type and cause to pipeline_failures.",
)
def record_pipeline_failures(context: RunFailureSensorContext) -> None:
    run = context.dagster_run
    rows = failure_rows(context.instance, run.run_id, run.job_name, context.failure_event.message or "")
    version = record_failures(get_settings(), rows)
    for row in rows:
        context.log.info(
            "recorded failure of run %s step %s: %s (%s)",
            row["run_id"][:8],
            row["step_key"],
            row["error_type"],
            row["cause"][:200],
        )
    context.log.info("pipeline_failures at version %d", version)
