"""Sensors: start the main job when files land, change or disappear in the landing zone."""

import hashlib
import os
from pathlib import Path

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from pipelines.jobs import main_job
from resources.lakehouse import local_path
from resources.settings import get_settings


def landing_fingerprint(root: Path) -> tuple[str, int]:
    """A digest of every landed file's path, size and mtime: it changes whenever the landing zone does."""
    digest = hashlib.sha256()
    count = 0
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            stat = (Path(dirpath) / name).stat()
            digest.update(f"{dirpath}/{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            count += 1
    return digest.hexdigest(), count


@sensor(job=main_job, minimum_interval_seconds=5, default_status=DefaultSensorStatus.STOPPED)
def landing_zone_sensor(context: SensorEvaluationContext):
    """One run per change of the landing zone; the run key is the zone's fingerprint, so a batch runs once."""
    root = local_path(get_settings().landing_uri)
    if root is None or not root.exists():
        return SkipReason(f"landing zone {get_settings().landing_uri} is not a local folder that exists")
    fingerprint, count = landing_fingerprint(root)
    if fingerprint == context.cursor:
        return SkipReason("no change in the landing zone")
    context.update_cursor(fingerprint)
    return RunRequest(run_key=fingerprint, tags={"groundwork/landed_files": str(count)})
