"""Freshness policies: how old the served data may get before Dagster marks it stale (asset health in the
UI; ``freshness: enabled`` in dagster.yaml turns on their evaluation by the daemon).

The nightly refresh (02:00 UTC) updates gold and the index at least daily, and the sensors sooner; a day
without a successful update warns, and past 26 hours the asset fails its policy.
"""

from datetime import timedelta

from dagster import FreshnessPolicy

SERVED_DATA_FRESHNESS = FreshnessPolicy.time_window(
    fail_window=timedelta(hours=26), warn_window=timedelta(hours=24)
)
