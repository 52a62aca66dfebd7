"""Schedules: a nightly run of the main job picks up anything the sensors missed; a nightly validation
re-checks every table against its suite; maintenance keeps the tables compact and their history bounded;
the daily monitoring job watches quality over time.
"""

from datetime import UTC

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from pipelines.jobs import MONITORING_JOB, VALIDATION_JOB, main_job, maintenance_job


@schedule(
    name="nightly_refresh",
    job=main_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Runs the whole pipeline at 02:00 UTC; incremental, so an idle night costs little.",
)
def nightly_refresh(context: ScheduleEvaluationContext) -> RunRequest:
    """The main job for the ingest day the tick falls on (structured sources are partitioned by it)."""
    day = context.scheduled_execution_time.astimezone(UTC).strftime("%Y-%m-%d")
    return RunRequest(run_key=f"nightly-{day}", partition_key=day)


nightly_validation = ScheduleDefinition(
    name="nightly_validation",
    job_name=VALIDATION_JOB,  # built with the code location's checks (pipelines/definitions.py)
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every blocking quality check over the current tables at 03:30 UTC (after the refresh).",
)

nightly_maintenance = ScheduleDefinition(
    name="nightly_maintenance",
    job=maintenance_job,
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Delta OPTIMIZE + VACUUM and LanceDB compaction, cleanup and index refresh at 04:00 UTC.",
)


daily_monitoring = ScheduleDefinition(
    name="daily_monitoring",
    job_name=MONITORING_JOB,
    cron_schedule="30 4 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Evaluation trend, embedding, query and data drift at 04:30 UTC, after the refresh and the "
    "validation: the night's new chunks and silver rows, the day's queries (docs/monitoring.md).",
)
