"""Dagster wiring: Definitions, jobs, schedules and sensors, plus the ``groundwork`` command."""
