"""Near-real-time: a sensor per landing zone starts a run when files land; declarative automation
carries each change downstream (silver → gold → embeddings) as soon as the upstream is updated, and
holds it back while a blocking quality check upstream has failed.

Documents are the latency-critical path (landing → searchable), so their change is carried through to
the index in one run, with the same blocking checks (a failed one stops the run there): by default in
the resident worker (``pipelines/worker.py``), which this sensor starts and which keeps Spark and the
model warm between batches; with ``GROUNDWORK_DOCUMENTS_WORKER=false``, in one run per landed batch.
Automation then finds the chain up to date; it still carries any other update of ``bronze_documents``
(a backfill, a manual run).

Structured sources land into a daily partition of bronze; automation carries them on into their
unpartitioned silver tables."""

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

from assets.landing import landing_fingerprint, list_landing
from assets.structured.contracts import load_sources
from pipelines.jobs import WRITES_TABLES_TAG
from pipelines.worker import DOCUMENT_ASSETS, WORKER_JOB, live_worker_run_id
from resources.settings import Settings

SENSOR_INTERVAL_SECONDS = 5


DOCUMENTS_TO_INDEX = [AssetKey(name) for name in DOCUMENT_ASSETS]


def landing_change(
    landing_uri: str, source: str, cursor: str | None, storage_options: dict[str, str] | None = None
) -> tuple[int, str] | None:
    """``(files, fingerprint)`` of ``landing/<source>/`` when it differs from the sensor's ``cursor``;
    ``None`` when nothing changed (an empty zone never seen before is no change either)."""
    listing = list_landing(f"{landing_uri.rstrip('/')}/{source}", storage_options)
    fingerprint = landing_fingerprint(listing)
    if fingerprint == cursor or (listing.empty and cursor is None):
        return None
    return len(listing), fingerprint


def landing_sensor(
    landing_uri: str,
    source: str,
    partitioned: bool,
    targets: list[AssetKey] | None = None,
    storage_options: dict[str, str] | None = None,
) -> SensorDefinition:
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

        change = landing_change(landing_uri, source, context.cursor, storage_options)
        if change is None:
            return SkipReason(f"no change in landing/{source}/")
        files, fingerprint = change
        context.update_cursor(fingerprint)
        return RunRequest(
            run_key=f"{source}-{fingerprint[:24]}",
            asset_selection=targets,
            partition_key=current_ingest_day() if partitioned else None,
            tags={"groundwork/landed_files": str(files), "groundwork/source": source} | WRITES_TABLES_TAG,
        )

    return watch


def documents_worker_sensor(
    landing_uri: str, storage_options: dict[str, str] | None = None
) -> SensorDefinition:
    """Keep a resident documents worker running while documents land: start one on a change of
    ``landing/documents/`` when none is queued or running. The worker itself picks up every later
    change; if it stops (stopped by hand, or crashed), the next change starts a new one, which first
    catches up on anything that landed in between."""

    @sensor(
        name="documents_landing_sensor",
        job_name=WORKER_JOB,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            f"Starts the resident {WORKER_JOB} run, which indexes each change of landing/documents/ "
            "within seconds, when files land and no worker is running."
        ),
    )
    def watch(context: SensorEvaluationContext):
        change = landing_change(landing_uri, "documents", context.cursor, storage_options)
        if change is None:
            return SkipReason("no change in landing/documents/ since the worker was started")
        files, fingerprint = change
        worker = live_worker_run_id(context.instance)
        if worker is not None:
            return SkipReason(f"worker run {worker} is indexing landing/documents/")
        context.update_cursor(fingerprint)
        return RunRequest(
            run_key=f"documents-worker-{fingerprint[:24]}",
            job_name=WORKER_JOB,
            tags={"groundwork/landed_files": str(files), "groundwork/source": "documents"},
        )

    return watch


def topics_sensor(settings: Settings) -> SensorDefinition | None:
    """Keep up with the consumed topics (None without any): the topic sources of ``sources.yaml`` and the
    documents topic. When one has consumer lag, start the resident worker if none is running (it then
    ingests every later message itself), or with ``GROUNDWORK_DOCUMENTS_WORKER=false`` one run of the
    lagging sources' bronze (automation carries silver) and one of the documents' chain to the index.
    The run key holds the lagging topics' checkpoint offsets, so one backlog starts one run."""
    import hashlib
    import json

    from resources.kafka import DOCUMENTS_TOPIC_SOURCE, checkpoint_offsets, topic_source_lags, topic_streams

    streams = {source: (topic, checkpoint) for source, topic, checkpoint in topic_streams(settings)}
    if not streams:
        return None
    worker = settings.documents_worker
    records = [f"bronze_{name}" for name in streams if name != DOCUMENTS_TOPIC_SOURCE]
    selection = [AssetKey(name) for name in records]
    if DOCUMENTS_TOPIC_SOURCE in streams:
        selection += DOCUMENTS_TO_INDEX
    named = ", ".join(f"{name} ({topic})" for name, (topic, _) in streams.items())

    @sensor(
        name="topics_sensor",
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        **({"job_name": WORKER_JOB} if worker else {"asset_selection": selection}),
        description=(
            f"When a consumed topic ({named}) has messages not yet in bronze: "
            + (f"starts the resident {WORKER_JOB} run if none is running." if worker else "ingests them.")
        ),
    )
    def watch(context: SensorEvaluationContext):
        from assets.structured.assets import current_ingest_day
        from resources.lakehouse import Lakehouse

        rows = topic_source_lags(settings, timeout=5.0)
        behind = [r["source"] for r in rows if r["lag"] and sum(r["lag"].values())]
        unknown = [f"{r['source']}: {r['error']}" for r in rows if r["error"]]
        if not behind:
            return SkipReason("no consumed topic has lag" + (f" ({'; '.join(unknown)})" if unknown else ""))
        lakehouse = Lakehouse.from_settings(settings)

        def run_key(names: list[str]) -> str:
            position = {
                name: checkpoint_offsets(lakehouse.checkpoint_path(streams[name][1]), streams[name][0])
                for name in names
            }
            return hashlib.sha256(json.dumps(position, sort_keys=True).encode()).hexdigest()[:24]

        tags = {"groundwork/topics": ",".join(behind)}
        if worker:
            live = live_worker_run_id(context.instance)
            if live is not None:
                return SkipReason(f"worker run {live} is ingesting the topics")
            return RunRequest(run_key=f"topics-worker-{run_key(behind)}", job_name=WORKER_JOB, tags=tags)
        # Record sources are partitioned by ingest day, the documents' chain is not: a run for each.
        lagging_records = [name for name in behind if name != DOCUMENTS_TOPIC_SOURCE]
        requests = []
        if lagging_records:
            requests.append(
                RunRequest(
                    run_key=f"topics-{run_key(lagging_records)}",
                    asset_selection=[AssetKey(f"bronze_{name}") for name in lagging_records],
                    partition_key=current_ingest_day(),
                    tags=tags | WRITES_TABLES_TAG,
                )
            )
        if DOCUMENTS_TOPIC_SOURCE in behind:
            requests.append(
                RunRequest(
                    run_key=f"topics-documents-{run_key([DOCUMENTS_TOPIC_SOURCE])}",
                    asset_selection=DOCUMENTS_TO_INDEX,
                    tags=tags | WRITES_TABLES_TAG,
                )
            )
        return requests

    return watch


def landing_sensors(settings: Settings) -> list[SensorDefinition]:
    """A sensor per landing zone of ``settings``; documents either start the resident worker or one run
    per batch (``documents_worker``)."""
    landing, options = settings.landing_uri, settings.object_store_options()
    documents = (
        documents_worker_sensor(landing, options)
        if settings.documents_worker
        else landing_sensor(landing, "documents", False, DOCUMENTS_TO_INDEX, options)
    )
    return [
        documents,
        *(
            landing_sensor(landing, contract.name, partitioned=True, storage_options=options)
            for contract in load_sources(settings.sources_file)
            if not contract.topic
        ),
        *filter(None, [topics_sensor(settings)]),
    ]


automation_sensor = AutomationConditionSensorDefinition(
    "groundwork_automation",
    target=AssetSelection.all(),
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    run_tags=WRITES_TABLES_TAG,
    description="Evaluates the assets' automation conditions: downstream follows bronze, gated by checks.",
)
