"""The resident documents worker: a long-lived run that keeps Spark's JVM and the embedding model warm
and carries each change of ``landing/documents/`` to the index as soon as it lands, and each message
published on a topic source (``topic:`` in ``sources.yaml``) into its bronze and silver tables.

A run per batch pays for a process, a JVM and a model load every time (most of a minute on 2 cores);
the worker pays once. It lists the landing zone every ``documents_worker_poll_seconds`` and, when the
listing changed, materializes the four document assets with their blocking checks, exactly what the
per-batch run would, as a run of the ``documents_batch`` job executed in this process. Every batch
therefore has its materializations, check results, logs and failure in Dagster like any run, tagged
with the worker's run id. The landing sensor starts the worker when none is running
(``GROUNDWORK_DOCUMENTS_WORKER=false`` goes back to one run per batch).

Topic sources the same way: at each poll, the consumer lag of every topic source (the cluster's latest
offsets against bronze's checkpoint, no Spark); when some have messages not yet ingested, one run of the
``topics_batch`` job materializes their bronze and silver with their checks, in this process.
"""

import time

from dagster import (
    AssetKey,
    AssetSelection,
    Config,
    DagsterRunStatus,
    Definitions,
    JobDefinition,
    OpExecutionContext,
    RunsFilter,
    define_asset_job,
    job,
    op,
)

from assets.landing import landing_fingerprint, list_landing
from assets.structured.contracts import load_sources
from pipelines.failure_log import record_failures
from pipelines.failures import failure_rows
from resources.definitions import RESOURCE_CLASSES
from resources.settings import Settings

WORKER_JOB = "documents_worker"
BATCH_JOB = "documents_batch"
TOPICS_BATCH_JOB = "topics_batch"
WORKER_TAG = "groundwork/documents_worker"
DOCUMENT_ASSETS = ["bronze_documents", "silver_documents", "document_chunks", "chunk_embeddings"]
# Every resource the document assets and their checks may ask for (the worker hands on its own).
RESOURCE_KEYS = set(RESOURCE_CLASSES)
# The worker outlives no deployment: Dagster's code server keeps serving a run it launched until the run
# ends, so a worker left running when `dagster dev` stops would poll on, unseen, for ever.
DAEMON_GONE_SECONDS = 120.0
DAEMON_CHECK_SECONDS = 10.0
LIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


# What the worker runs for each change, as a job of the deployment's own: its runs are listed under this
# name in the UI (not as an unnamed asset run) and can be re-executed from there like any job's.
documents_batch_job = define_asset_job(
    BATCH_JOB,
    selection=AssetSelection.assets(*DOCUMENT_ASSETS),
    description=(
        "One change of landing/documents/ through silver and gold into the index, with every blocking "
        f"check: what the resident {WORKER_JOB} run executes for each change it sees."
    ),
)


def topic_assets(settings: Settings) -> list[str]:
    """bronze and silver of every topic source of ``settings``."""
    names = [s.name for s in load_sources(settings.sources_file) if s.topic]
    return [f"{layer}_{name}" for name in names for layer in ("bronze", "silver")]


def topics_batch_job(settings: Settings) -> JobDefinition | None:
    """What the worker runs when a topic source has messages to ingest (None without topic sources)."""
    from assets.structured.assets import INGEST_DAYS

    assets = topic_assets(settings)
    if not assets:
        return None
    return define_asset_job(
        TOPICS_BATCH_JOB,
        selection=AssetSelection.assets(*assets),
        partitions_def=INGEST_DAYS,
        description=(
            "The messages published on the topic sources since the last run into bronze and silver, with "
            f"every blocking check: what the resident {WORKER_JOB} run executes when a topic has lag."
        ),
    )


def lagging_topics(context: OpExecutionContext, settings: Settings) -> list[str]:
    """Topic sources with messages published and not yet in bronze (a cluster that does not answer is
    logged and retried at the next poll: it never stops the worker)."""
    from resources.kafka import OffsetsLost, source_lag

    kafka, lakehouse = context.resources.kafka, context.resources.lakehouse
    if not kafka.bootstrap:
        return []
    behind = []
    for source in load_sources(settings.sources_file):
        if not source.topic:
            continue
        checkpoint = lakehouse.checkpoint_path(f"bronze_{source.name}")
        try:
            lag = source_lag(kafka.bootstrap, kafka.options, source.topic, checkpoint, timeout=5.0)
        except Exception as exc:  # the cluster away (the next poll tries again), or offsets lost
            level = "error" if isinstance(exc, OffsetsLost) else "warning"
            getattr(context.log, level)("worker: topic %s not ingested: %s", source.topic, exc)
            continue
        if lag and sum(lag.values()):
            behind.append(source.name)
    return behind


def documents_topic_behind(context: OpExecutionContext) -> bool:
    """Whether the documents topic (when one is configured) has events not yet in bronze_documents; a
    cluster that does not answer is logged and asked again at the next poll."""
    from assets.documents.assets import documents_topic_lag
    from resources.kafka import OffsetsLost

    kafka = context.resources.kafka
    if not kafka.documents_topic or not kafka.bootstrap:
        return False
    try:
        lag = documents_topic_lag(context.resources.lakehouse, kafka)
    except Exception as exc:  # the cluster away (the next poll tries again), or offsets lost
        level = "error" if isinstance(exc, OffsetsLost) else "warning"
        getattr(context.log, level)("worker: documents topic %s not ingested: %s", kafka.documents_topic, exc)
        return False
    return bool(lag and sum(lag.values()))


class WorkerConfig(Config):
    """``idle_exit_seconds`` > 0 ends the worker after that long without a change (0: until stopped)."""

    idle_exit_seconds: float = 0.0


def daemon_stopped(instance, now: float | None = None) -> bool:
    """Whether the Dagster daemon that runs this deployment has stopped: it heartbeats every 30 s, so
    none for ``DAEMON_GONE_SECONDS`` means it is gone (``dagster dev`` was stopped, say). An instance
    without any heartbeat has no daemon (a run executed in-process) and never counts as stopped."""
    beats = [beat.timestamp for beat in instance.get_daemon_heartbeats().values()]
    return bool(beats) and (now or time.time()) - max(beats) > DAEMON_GONE_SECONDS


def live_worker_run_id(instance) -> str | None:
    """The run id of a worker that is queued or running, if any."""
    runs = instance.get_run_records(RunsFilter(job_name=WORKER_JOB, statuses=LIVE_STATUSES), limit=1)
    return runs[0].dagster_run.run_id if runs else None


def documents_worker_job(settings: Settings, definitions: list) -> JobDefinition:
    """The resident worker's job for ``settings``: the assets and checks it builds its batches from
    (``definitions``, those of the code location), its poll interval and the table its failures go to."""

    @op(name="index_landed_documents", required_resource_keys=RESOURCE_KEYS)
    def index_landed_documents(context: OpExecutionContext, config: WorkerConfig) -> int:
        """Poll the documents landing zone, the documents topic's and the topic sources' lag; on each change,
        run the document assets (or the lagging topics' bronze and silver) and their checks here. Returns
        batches run."""
        from assets.structured.assets import current_ingest_day

        resources = {key: getattr(context.resources, key) for key in RESOURCE_KEYS}
        # The worker's own resources, Spark and the model warm, serve every batch.
        topics_job = topics_batch_job(settings)
        deployment = Definitions(
            assets=definitions,
            jobs=[documents_batch_job, *([topics_job] if topics_job else [])],
            resources=resources,
        )
        batch_job = deployment.get_job_def(BATCH_JOB)
        root = context.resources.lakehouse.landing_path("documents")
        indexed, batches, idle_since = None, 0, time.monotonic()
        landed = list_landing(root, context.resources.lakehouse.storage_options)
        if landed.empty and not context.resources.lakehouse.exists("bronze_documents"):
            indexed = landing_fingerprint(landed)  # nothing landed and nothing indexed: no batch to run
        next_daemon_check = time.monotonic() + DAEMON_CHECK_SECONDS
        poll = settings.documents_worker_poll_seconds
        context.log.info("documents worker: watching %s every %.1fs", root, poll)
        while True:
            listing = list_landing(root, context.resources.lakehouse.storage_options)
            fingerprint = landing_fingerprint(listing)
            events = fingerprint == indexed and documents_topic_behind(context)
            if fingerprint != indexed or events:
                started = time.monotonic()
                result = batch_job.execute_in_process(
                    instance=context.instance,
                    tags={WORKER_TAG: context.run_id, "groundwork/landed_files": str(len(listing))},
                    raise_on_error=False,
                )
                # A failed batch is not retried in a loop: its run records why (a blocking check, bad data);
                # the next change, the nightly refresh or a manual run picks it up again.
                indexed, batches, idle_since = fingerprint, batches + 1, time.monotonic()
                context.log.info(
                    "documents worker: batch %d (run %s) %s in %.1fs",
                    batches,
                    result.run_id,
                    "indexed" if result.success else "failed",
                    idle_since - started,
                )
                if not result.success:
                    rows = failure_rows(context.instance, result.run_id, WORKER_JOB, "worker batch failed")
                    record_failures(settings, rows)
                    for row in rows:
                        context.log.error(
                            "documents worker: %s failed: %s", row["step_key"], row["cause"][:500]
                        )
                    if events:  # the topic's lag stays: try once more after a pause, not in a loop
                        time.sleep(max(poll, 5.0))
                continue
            behind = lagging_topics(context, settings) if topics_job else []
            if behind:
                started = time.monotonic()
                selection = [f"{layer}_{name}" for name in behind for layer in ("bronze", "silver")]
                result = deployment.get_job_def(TOPICS_BATCH_JOB).execute_in_process(
                    instance=context.instance,
                    partition_key=current_ingest_day(),
                    asset_selection=[AssetKey(name) for name in selection],
                    tags={WORKER_TAG: context.run_id, "groundwork/topics": ",".join(behind)},
                    raise_on_error=False,
                )
                batches, idle_since = batches + 1, time.monotonic()
                context.log.info(
                    "worker: topic batch for %s (run %s) %s in %.1fs",
                    ", ".join(behind),
                    result.run_id,
                    "ingested" if result.success else "failed",
                    idle_since - started,
                )
                if not result.success:
                    # Not retried in a loop either: the lag stays, so the next poll tries once more after
                    # ``poll`` seconds; the failure is recorded like a documents batch's.
                    rows = failure_rows(context.instance, result.run_id, WORKER_JOB, "worker batch failed")
                    record_failures(settings, rows)
                    time.sleep(max(poll, 5.0))
                continue
            if config.idle_exit_seconds and time.monotonic() - idle_since >= config.idle_exit_seconds:
                context.log.info("documents worker: idle for %.0fs, stopping", config.idle_exit_seconds)
                return batches
            if time.monotonic() >= next_daemon_check:
                if daemon_stopped(context.instance):
                    context.log.warning("documents worker: the Dagster daemon has stopped; stopping too")
                    return batches
                next_daemon_check = time.monotonic() + DAEMON_CHECK_SECONDS
            time.sleep(poll)

    @job(
        name=WORKER_JOB,
        description=(
            "Resident worker: keeps Spark and the embedding model warm and indexes each change of "
            "landing/documents/ within seconds (one in-process run per batch)."
        ),
    )
    def documents_worker():
        index_landed_documents()

    return documents_worker
