"""``bronze_<source>`` and ``silver_<source>`` for every source declared in ``sources.yaml``.

Bronze is partitioned by ingest date (a Delta partition column and a Dagster daily partition). A run
for the current day picks up newly landed files through Structured Streaming; a run (or backfill)
for a past day re-reads the files recorded under that day from the landing zone and replaces the
day's records atomically, so a corrected delivery or a parser fix reaches silver without duplicates.
"""

from datetime import UTC, datetime
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    asset,
)
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from assets.automation import DOWNSTREAM_OF_BRONZE
from assets.incremental import pending_increment, quarantine_rejected
from assets.landing import (
    already_ingested,
    landing_state,
    list_landing,
    mark_ingested,
    stream_app_id,
    stream_landed_files,
)
from assets.metadata import column_lineage, delta_metadata
from assets.quarantine import record_ingestion_run
from assets.retries import transient_retries
from assets.structured.contracts import SourceContract, load_sources
from assets.structured.topics import (
    KAFKA_RECORD_SCHEMA,
    ingest_topic,
    lag_metadata,
    stamp_records,
    tombstone_event_time,
    topic_lag,
)
from assets.structured.transform import (
    BRONZE_RECORD_SCHEMA,
    drift_columns,
    duplicate_files,
    parse_landed_records,
    protect_pii,
    split_silver_records,
    unseen_files,
)
from resources import KafkaResource, LakehouseResource, PrivacyResource, SparkResource

INGEST_DATE = "_ingest_date"
# end_offset=1: the current (still filling) day is a partition too, the one new files land in.
INGEST_DAYS = DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1)


def current_ingest_day() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def ingest_new_files(
    session: SparkSession,
    lakehouse: LakehouseResource,
    contract: SourceContract,
    run_id: str,
    ingest_day: str,
) -> int:
    """Stream newly landed files of ``contract``'s source into its bronze table under ``ingest_day``,
    then record the files the stream cannot see (empty files, in-place rewrites). Returns batches run."""
    bronze_name = f"bronze_{contract.name}"
    root, checkpoint = lakehouse.landing_path(contract.name), lakehouse.checkpoint_path(bronze_name)
    options = lakehouse.storage_options

    def stamp(records: DataFrame) -> DataFrame:
        return records.withColumns(
            {
                "_ingested_at": F.current_timestamp(),
                "_run_id": F.lit(run_id),
                INGEST_DATE: F.lit(ingest_day).cast("date"),
            }
        )

    def ingest(files, batch_id: int) -> None:
        records = stamp(parse_landed_records(session, contract, files, options))
        txn = (stream_app_id(checkpoint, options), batch_id)
        lakehouse.append(records, bronze_name, txn=txn, partition_by=[INGEST_DATE])

    batches = stream_landed_files(
        session, root, checkpoint, ingest, lakehouse.stream_max_files_per_batch, options
    )
    landed = list_landing(root, options)
    if lakehouse.exists(bronze_name):
        landed = unseen_files(landed, lakehouse.read(session, bronze_name))
    if len(landed) or not lakehouse.exists(bronze_name):  # the first run creates the table regardless
        records = stamp(parse_landed_records(session, contract, landed, options))
        lakehouse.append(records, bronze_name, partition_by=[INGEST_DATE])
    return batches


def rebuild_ingest_day(
    session: SparkSession, lakehouse: LakehouseResource, contract: SourceContract, run_id: str, day: str
) -> int:
    """Re-read the files recorded under ``day`` and replace that day's records in one commit.

    Records of a file no longer in the landing zone are kept as they are. Returns files re-read.
    """
    bronze_name = f"bronze_{contract.name}"
    if not lakehouse.exists(bronze_name):
        return 0
    day_rows = lakehouse.read(session, bronze_name).where(F.col(INGEST_DATE) == F.lit(day).cast("date"))
    recorded = {r["_source_file"] for r in day_rows.select("_source_file").distinct().collect()}
    landed = list_landing(lakehouse.landing_path(contract.name), lakehouse.storage_options)
    landed = landed[landed["path"].isin(recorded)]
    reread = parse_landed_records(session, contract, landed, lakehouse.storage_options).withColumns(
        {
            "_ingested_at": F.current_timestamp(),
            "_run_id": F.lit(run_id),
            INGEST_DATE: F.lit(day).cast("date"),
        }
    )
    kept = day_rows.where(~F.col("_source_file").isin(list(landed["path"])))
    replaced = reread.unionByName(kept).cache()
    replaced.count()  # read the day's kept rows before the overwrite replaces them
    lakehouse.append(replaced, bronze_name, replace_where=f"{INGEST_DATE} = '{day}'")
    replaced.unpersist()
    return len(landed)


def topic_bronze_asset(contract: SourceContract) -> AssetsDefinition:
    """``bronze_<source>`` of a topic source: the messages published since the last run, exactly once
    (``topics.ingest_topic``), under the run's ingest day, with the consumer lag after the run."""
    bronze_name = f"bronze_{contract.name}"

    @asset(
        name=bronze_name,
        group_name="bronze",
        kinds={"spark", "delta", "kafka"},
        partitions_def=INGEST_DAYS,
        backfill_policy=BackfillPolicy.single_run(),
        description=(
            f"{contract.description} Every message of Kafka topic {contract.topic!r} as published, with its "
            "topic, partition, offset, timestamp and key, partitioned by ingest date."
        ),
    )
    @transient_retries
    def bronze(
        context: AssetExecutionContext,
        spark: SparkResource,
        lakehouse: LakehouseResource,
        kafka: KafkaResource,
    ) -> MaterializeResult:
        day, today = context.partition_keys[-1], current_ingest_day()
        bootstrap, options = kafka.require_bootstrap(), kafka.options
        lag = topic_lag(lakehouse, contract, bootstrap, options)
        stats = {"records": 0, "unreadable": 0}
        batches = 0
        # A topic is not re-read per day (its retention decides what is still there): a run for a past
        # day alone ingests nothing; new messages go under the current day.
        pending = day >= today and bool(lag and sum(lag.values()))
        if pending or not lakehouse.exists(bronze_name):  # the first run creates the table regardless
            session = spark.session()
            before = lakehouse.version(bronze_name)
            if pending:
                batches = ingest_topic(
                    session,
                    lakehouse,
                    contract,
                    contract.topic,
                    bootstrap,
                    options,
                    context.run_id,
                    day,
                    kafka.max_offsets_per_batch,
                )
                lag = topic_lag(lakehouse, contract, bootstrap, options)
            if not lakehouse.exists(bronze_name):
                empty = stamp_records(session.createDataFrame([], KAFKA_RECORD_SCHEMA), context.run_id, day)
                lakehouse.append(empty, bronze_name, partition_by=[INGEST_DATE])
            new = lakehouse.changes(session, bronze_name, before).where("_change_type = 'insert'")
            stats = new.agg(
                F.count("*").alias("records"),
                F.count("_error").alias("unreadable"),
            ).first()
        return MaterializeResult(
            metadata=delta_metadata(
                lakehouse,
                bronze_name,
                None,
                topic=contract.topic,
                messages_ingested=stats["records"],
                records_unreadable=stats["unreadable"],
                stream_batches=batches,
                **lag_metadata(contract.topic, lag),
            )
        )

    return bronze


def file_bronze_asset(contract: SourceContract) -> AssetsDefinition:
    """``bronze_<source>`` of a file source: newly landed files by Structured Streaming, past days
    re-read from the landing zone (``rebuild_ingest_day``)."""
    bronze_name = f"bronze_{contract.name}"

    @asset(
        name=bronze_name,
        group_name="bronze",
        kinds={"spark", "delta"},
        partitions_def=INGEST_DAYS,
        backfill_policy=BackfillPolicy.single_run(),
        description=(
            f"{contract.description} Every record as landed ({contract.format}), with its file and line, "
            "partitioned by ingest date."
        ),
    )
    @transient_retries
    def bronze(
        context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource
    ) -> MaterializeResult:
        days = context.partition_keys
        today = current_ingest_day()
        landing_path = lakehouse.landing_path(contract.name)
        checkpoint = lakehouse.checkpoint_path(bronze_name)
        options = lakehouse.storage_options
        state = landing_state(landing_path, options)
        past = [day for day in days if day < today]
        stats = {"records": 0, "unreadable": 0, "files": 0}
        rebuilt = batches = 0
        if past or days[-1] < today or not already_ingested(checkpoint, state, options):
            session = spark.session()
            before = lakehouse.version(bronze_name)
            rebuilt = sum(
                rebuild_ingest_day(session, lakehouse, contract, context.run_id, day) for day in past
            )
            if days[-1] >= today:
                batches = ingest_new_files(session, lakehouse, contract, context.run_id, days[-1])
                mark_ingested(checkpoint, state, options)
            new = lakehouse.changes(session, bronze_name, before).where("_change_type = 'insert'")
            stats = new.agg(
                F.count("*").alias("records"),
                F.count("_error").alias("unreadable"),
                F.countDistinct("_source_file").alias("files"),
            ).first()
        return MaterializeResult(
            metadata=delta_metadata(
                lakehouse,
                bronze_name,
                BRONZE_RECORD_SCHEMA,
                landing_path=landing_path,
                files_ingested=stats["files"],
                files_reread=rebuilt,
                records_landed=stats["records"],
                records_unreadable=stats["unreadable"],
                stream_batches=batches,
            )
        )

    return bronze


def quarantine_provenance(contract: SourceContract) -> tuple[Column, Column, Column]:
    """(source_file, line, record_key) of a rejected record in the quarantine's columns: a file's path and
    line, or for a topic ``kafka:<topic>/<partition>`` and the offset (the key ``...:<offset>``)."""
    if contract.topic:
        where = F.concat(F.lit("kafka:"), F.col("_topic"), F.lit("/"), F.col("_partition").cast("string"))
        return where, F.col("_offset"), F.concat(where, F.lit(":"), F.col("_offset").cast("string"))
    line = F.coalesce(F.col("_line").cast("string"), F.lit(""))
    return F.col("_source_file"), F.col("_line"), F.concat_ws(":", F.col("_source_file"), line)


def source_assets(contract: SourceContract) -> list[AssetsDefinition]:
    """bronze and silver of one source: a file or a topic bronze, then the same silver MERGE."""
    bronze_name, silver_name = f"bronze_{contract.name}", f"silver_{contract.name}"
    bronze = topic_bronze_asset(contract) if contract.topic else file_bronze_asset(contract)

    lineage = column_lineage(
        {column: [(bronze_name, "record")] for column in contract.column_names}
        | {column: [(bronze_name, column)] for column in contract.provenance}
        | {"_bronze_ingested_at": [(bronze_name, "_ingested_at")]}
    )

    @asset(
        name=silver_name,
        group_name="silver",
        kinds={"spark", "delta"},
        automation_condition=DOWNSTREAM_OF_BRONZE,
        deps=[bronze, *(AssetKey(f"silver_{r.source}") for r in contract.references)],
        description=(
            f"{contract.description} Typed by its contract, one row per {', '.join(contract.primary_key)} "
            "(latest event time wins); rejected rows go to the quarantine with a reason."
        ),
    )
    @transient_retries
    def silver(
        context: AssetExecutionContext,
        spark: SparkResource,
        lakehouse: LakehouseResource,
        privacy: PrivacyResource,
    ) -> MaterializeResult:
        """Applies only the bronze records added since its last run (Change Data Feed), in one
        idempotent MERGE that also stores the bronze version applied in silver's Delta log."""
        counts = {"landed": 0, "accepted": 0, "quarantined": 0, "duplicates": 0, "deleted": 0}
        increment = pending_increment(spark, lakehouse, bronze_name, silver_name)
        if increment is not None:
            session = increment.session
            referenced = {
                r.source: lakehouse.read(session, f"silver_{r.source}") for r in contract.references
            }
            records = increment.changes.where("_change_type = 'insert'").drop(
                "_change_type", "_commit_version"
            )
            if contract.topic:
                records = tombstone_event_time(records, contract)
            drift = drift_columns(records, contract)
            records = records.withColumns({f"_drift_{c}": F.col("record").getItem(c) for c in drift}).cache()
            batch = split_silver_records(
                records,
                contract,
                referenced,
                silver=lakehouse.read(session, silver_name) if lakehouse.exists(silver_name) else None,
                duplicates=None
                if contract.topic
                else duplicate_files(records, lakehouse.read(session, bronze_name)),
            )
            changes = protect_pii(batch.changes, contract, privacy.key())
            version = F.lit(increment.upstream_version).cast("long")
            changes = changes.withColumn("_bronze_version", version).cache()
            rejected = batch.rejected.withColumn("run_id", F.lit(context.run_id)).cache()
            quarantine_rejected(
                increment,
                lakehouse,
                {
                    "bronze": rejected.where(F.col("_error").isNotNull()),
                    "silver": rejected.where(F.col("_error").isNull()),
                },
                contract.name,
                *quarantine_provenance(contract),
                F.col("_raw"),
            )
            changed = " OR ".join(f"NOT (s.`{c}` <=> t.`{c}`)" for c in [*contract.column_names, *drift])
            lakehouse.apply_changes(
                session, changes, silver_name, contract.primary_key, changed_when=changed, txn=increment.txn
            )
            # One aggregation per cached frame instead of a Spark job per count.
            applied_rows = changes.agg(
                F.count("*").alias("n"), F.count_if("_delete").alias("deleted")
            ).first()
            rejected_rows = rejected.agg(
                F.count("*").alias("n"), F.count_if("_duplicate").alias("dup")
            ).first()
            counts = record_ingestion_run(
                lakehouse,
                contract.name,
                context.run_id,
                landed=records.count(),
                accepted=applied_rows["n"],
                quarantined=rejected_rows["n"] - rejected_rows["dup"],
                duplicates=batch.superseded.count() + rejected_rows["dup"],
                deleted=applied_rows["deleted"],
            )
            for frame in (records, changes, rejected):
                frame.unpersist()
            batch.unpersist()
        return MaterializeResult(
            metadata=delta_metadata(
                lakehouse,
                silver_name,
                None,
                **{"dagster/column_lineage": lineage},
                **{
                    f"silver_{ref.source}_version": lakehouse.version(f"silver_{ref.source}")
                    for ref in contract.references
                },
                **{f"records_{k}": v for k, v in counts.items()},
                bronze_version=lakehouse.version(bronze_name),
            )
        )

    return [bronze, silver]


def structured_assets(sources_file: Path) -> list[AssetsDefinition]:
    return [a for contract in load_sources(sources_file) for a in source_assets(contract)]
