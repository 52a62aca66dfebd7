"""Schedules: a nightly run of the main job picks up anything the sensors missed."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, ScheduleDefinition

from pipelines.jobs import main_job

nightly_refresh = ScheduleDefinition(
    name="nightly_refresh",
    job=main_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Runs the whole pipeline at 02:00 UTC; incremental, so an idle night costs little.",
)
