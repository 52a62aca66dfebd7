"""Near-real-time: a sensor per landing zone starts a run when files land; declarative automation
carries each change downstream (silver → gold → embeddings) as soon as the upstream is updated, and
holds it back while a blocking quality check upstream has failed.

Documents are the latency-critical path (landing → searchable), so their sensor's run carries the
change through to the index itself: one run process, one JVM, one model load, the same blocking checks
(a failed one stops the run there). Automation then finds the chain up to date; it still carries any
other update of ``bronze_documents`` (a backfill, a manual run). Structured sources land into a daily
partition of bronze; automation carries them on into their unpartitioned silver tables."""

import hashlib
from pathlib import Path

import pandas as pd
from dagster import (
    AssetKey,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from assets.landing import list_landing
from assets.structured.contracts import load_sources
from pipelines.jobs import WRITES_TABLES_TAG
from resources.settings import get_settings

SENSOR_INTERVAL_SECONDS = 5


def landing_fingerprint(listing: pd.DataFrame) -> str:
    """A digest of every landed file's path, size and mtime: it changes whenever the landing zone does."""
    digest = hashlib.sha256()
    for row in listing.sort_values("path").itertuples(index=False):
        digest.update(f"{row.path}\0{row.size_bytes}\0{row.modified_at.value}\n".encode())
    return digest.hexdigest()


DOCUMENTS_TO_INDEX = [
    AssetKey(name) for name in ("bronze_documents", "silver_documents", "document_chunks", "chunk_embeddings")
]


def landing_sensor(source: str, partitioned: bool, targets: list[AssetKey] | None = None) -> SensorDefinition:
    """Start ``targets`` (``bronze_<source>`` unless given) once per change of ``landing/<source>/``: the
    fingerprint is the run key, so a batch of files starts one run; the bronze stream itself picks up
    each file exactly once."""
    bronze = AssetKey(f"bronze_{source}")
    targets = targets or [bronze]

    @sensor(
        name=f"{source}_landing_sensor",
        asset_selection=targets,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            f"Materializes {', '.join(t.to_user_string() for t in targets)} when files land in, change in "
            f"or leave landing/{source}/."
        ),
    )
    def watch(context: SensorEvaluationContext):
        from assets.structured.assets import current_ingest_day

        root = f"{get_settings().landing_uri.rstrip('/')}/{source}"
        listing = list_landing(root)
        fingerprint = landing_fingerprint(listing)
        if fingerprint == context.cursor or (listing.empty and context.cursor is None):
            return SkipReason(f"no change in landing/{source}/")
        context.update_cursor(fingerprint)
        return RunRequest(
            run_key=f"{source}-{fingerprint[:24]}",
            asset_selection=targets,
            partition_key=current_ingest_day() if partitioned else None,
            tags={"groundwork/landed_files": str(len(listing)), "groundwork/source": source}
            | WRITES_TABLES_TAG,
        )

    return watch


def landing_sensors(sources_file: Path) -> list[SensorDefinition]:
    return [
        landing_sensor("documents", partitioned=False, targets=DOCUMENTS_TO_INDEX),
        *(landing_sensor(contract.name, partitioned=True) for contract in load_sources(sources_file)),
    ]


automation_sensor = AutomationConditionSensorDefinition(
    "groundwork_automation",
    target=AssetSelection.all(),
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    run_tags=WRITES_TABLES_TAG,
    description="Evaluates the assets' automation conditions: downstream follows bronze, gated by checks.",
)
