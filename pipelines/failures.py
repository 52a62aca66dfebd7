"""Failed runs, recorded with their cause in the ``pipeline_failures`` Delta table.

A run failure sensor (run by the Dagster daemon) writes one row per failed step: run, job, step, error
type, message, the cause and how many attempts it had. It writes with delta-rs, so no JVM starts in the
daemon; ``groundwork status`` reads the latest rows back.
"""

from datetime import UTC, datetime

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    run_failure_sensor,
)

from pipelines.failure_log import record_failures
from resources.settings import Settings


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


def failure_sensor(settings: Settings) -> SensorDefinition:
    """The run failure sensor, writing to the ``pipeline_failures`` table of ``settings``."""

    @run_failure_sensor(
        name="record_pipeline_failures",
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=10,
        description="Writes each failed run's failed steps, error type and cause to pipeline_failures.",
    )
    def record_pipeline_failures(context: RunFailureSensorContext) -> None:
        run = context.dagster_run
        rows = failure_rows(context.instance, run.run_id, run.job_name, context.failure_event.message or "")
        version = record_failures(settings, rows)
        for row in rows:
            context.log.info(
                "recorded failure of run %s step %s: %s (%s)",
                row["run_id"][:8],
                row["step_key"],
                row["error_type"],
                row["cause"][:200],
            )
        context.log.info("pipeline_failures at version %d", version)

    return record_pipeline_failures
