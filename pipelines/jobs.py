"""Jobs. The main job materializes every asset in-process, so one Spark session serves it; the nightly
validation job runs every quality check over the current tables; the maintenance job compacts
and cleans the Delta and LanceDB tables; the monitoring job runs the drift and trend checks daily.

No job-wide ``op_retry_policy``: Dagster's policy retries every exception, bad data included. Steps retry
through ``@transient_retries`` instead (transient errors only, with the policy's exponential backoff).
"""

from datetime import timedelta

from dagster import (
    AssetChecksDefinition,
    AssetSelection,
    OpExecutionContext,
    define_asset_job,
    job,
    op,
)

from assets.retries import transient_retries
from pipelines.maintenance import maintain_delta, maintain_lancedb
from resources import LakehouseResource, LanceDBResource, SparkResource

MAIN_JOB = "groundwork_main"
VALIDATION_JOB = "nightly_validation"
MAINTENANCE_JOB = "table_maintenance"
MONITORING_JOB = "daily_monitoring"
ADAPT_JOB = "adapt_embedder"
# Runs that write tables carry this tag; dagster.yaml lets one of them run at a time (a VACUUM must not
# race a MERGE, and two MERGEs into one table conflict anyway).
WRITES_TABLES_TAG = {"groundwork/writes-tables": "true"}

main_job = define_asset_job(
    MAIN_JOB,
    # Fine-tuning runs on demand (adapt_job), never as part of a refresh.
    selection=AssetSelection.all() - AssetSelection.assets("adapted_embedder"),
    description="Landing zone → bronze → silver → gold chunks → LanceDB embeddings, incrementally.",
    tags=WRITES_TABLES_TAG,
)

adapt_job = define_asset_job(
    ADAPT_JOB,
    selection=AssetSelection.assets("adapted_embedder"),
    description="Fine-tune the champion embedder on the corpus, register it, and promote it through the "
    "eval gate only if it retrieves better (`groundwork models adapt`).",
    tags=WRITES_TABLES_TAG,
)


def validation_job(checks: list[AssetChecksDefinition]):
    """The blocking quality checks (not the monitoring ones, which have their own job)."""
    return define_asset_job(
        VALIDATION_JOB,
        selection=AssetSelection.checks(*checks),
        description="Every blocking Great Expectations check over the current tables, without rebuilding "
        "them.",
    )


def monitoring_job(checks: list[AssetChecksDefinition]):
    """The monitoring checks over the current state (docs/monitoring.md); nothing is rebuilt."""
    return define_asset_job(
        MONITORING_JOB,
        selection=AssetSelection.checks(*checks),
        description="Evaluation trend, embedding, query and structured-data drift over the current tables "
        "and the audit log; results in the checks, the monitoring_results table and MLflow.",
    )


@op
@transient_retries
def optimize_and_vacuum_delta(
    context: OpExecutionContext, spark: SparkResource, lakehouse: LakehouseResource
):
    """OPTIMIZE then VACUUM every Delta table, keeping files for ``GROUNDWORK_DELTA_VACUUM_RETAIN_HOURS``."""
    results = maintain_delta(
        spark.session(), lakehouse.delta_uri, lakehouse.vacuum_retain_hours, lakehouse.storage_options
    )
    for r in results:
        context.log.info(
            "%s: %d files → %d, %d vacuumed, version %d",
            r.table,
            r.files_before,
            r.files_after,
            r.files_vacuumed,
            r.version,
        )
    return len(results)


@op
@transient_retries
def compact_and_clean_lancedb(context: OpExecutionContext, lancedb: LanceDBResource):
    """Compaction, index refresh, cleanup of versions older than GROUNDWORK_LANCEDB_KEEP_VERSIONS_DAYS."""
    results = maintain_lancedb(
        lancedb.connect(), lancedb.vector_index_min_rows, timedelta(days=lancedb.keep_versions_days)
    )
    for r in results:
        context.log.info(
            "%s: %d versions → %d, %d rows, version %d",
            r.table,
            r.versions_before,
            r.versions_after,
            r.rows,
            r.version,
        )
    return len(results)


@job(name=MAINTENANCE_JOB, tags=WRITES_TABLES_TAG, description="Delta OPTIMIZE + VACUUM; LanceDB compaction.")
def maintenance_job():
    optimize_and_vacuum_delta()
    compact_and_clean_lancedb()
