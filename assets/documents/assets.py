"""Documents: files in the landing zone → ``bronze_documents`` → ``silver_documents`` (Delta)."""

from dagster import AssetExecutionContext, MaterializeResult, asset
from pyspark.sql import Column
from pyspark.sql import functions as F

from assets.automation import DOWNSTREAM_OF_BRONZE
from assets.documents.topics import document_event_records
from assets.documents.transform import (
    BRONZE_DOCUMENTS_SCHEMA,
    SILVER_FROM_BRONZE,
    latest_bronze,
    latest_bronze_rows,
    parse_landed_documents,
    reconcile_landing,
    split_silver_documents,
    split_silver_rows,
)
from assets.incremental import (
    SmallIncrement,
    pending_increments,
    quarantine_rejected,
)
from assets.landing import (
    already_ingested,
    landing_state,
    list_landing,
    load_access_rules,
    mark_ingested,
    stream_app_id,
    stream_landed_files,
)
from assets.metadata import column_lineage, delta_metadata
from assets.quarantine import quarantine_rows, record_ingestion_run, write_quarantine
from assets.retries import transient_retries
from assets.structured.topics import lag_metadata, stream_topic
from resources import KafkaResource, LakehouseResource, SparkResource
from resources.kafka import DOCUMENTS_TOPIC_CHECKPOINT, source_lag

DOCUMENTS = "documents"
BRONZE, SILVER = "bronze_documents", "silver_documents"
SILVER_DOCUMENTS_LINEAGE = column_lineage(
    {column: [(BRONZE, column)] for column in SILVER_FROM_BRONZE} | {"ingested_at": [(BRONZE, "ingested_at")]}
)


def _ingest_documents(
    session, lakehouse: LakehouseResource, root: str, checkpoint: str, rules, run_id: str
) -> tuple[int, int, int, int]:
    """Stream new files into bronze, then record what the stream cannot see; returns the files added,
    removed and unreadable, and the stream batches run."""
    before = lakehouse.version(BRONZE)
    options = lakehouse.storage_options

    def ingest(files, batch_id: int) -> None:
        records = parse_landed_documents(session, files, rules, run_id, options)
        lakehouse.append(records, BRONZE, txn=(stream_app_id(checkpoint, options), batch_id))

    batches = stream_landed_files(
        session, root, checkpoint, ingest, lakehouse.stream_max_files_per_batch, options
    )
    if not lakehouse.exists(BRONZE):  # nothing has landed yet: an empty table for downstream readers
        empty = session.createDataFrame([], BRONZE_DOCUMENTS_SCHEMA)
        lakehouse.append(
            empty.withColumns({"ingested_at": F.current_timestamp(), "run_id": F.lit("")}), BRONZE
        )
    listing = list_landing(root, options)  # after the stream: a file landing meanwhile is not "removed"
    bronze = lakehouse.read(session, BRONZE)
    reconciled = reconcile_landing(session, listing, bronze, rules, run_id, options).cache()
    if reconciled.count():
        lakehouse.append(reconciled, BRONZE)
    reconciled.unpersist()
    new = lakehouse.changes(session, BRONZE, before).where("_change_type = 'insert'")
    counts = new.groupBy("is_deleted", F.col("parse_error").isNotNull().alias("failed")).count().collect()
    added = sum(r["count"] for r in counts if not r["is_deleted"])
    deleted = sum(r["count"] for r in counts if r["is_deleted"])
    failed = sum(r["count"] for r in counts if r["failed"] and not r["is_deleted"])
    return added, deleted, failed, batches


def documents_topic_lag(lakehouse: LakehouseResource, kafka: KafkaResource) -> dict[int, int] | None:
    """Per partition of the documents topic: events published and not yet in bronze (None: no topic yet)."""
    checkpoint = lakehouse.checkpoint_path(DOCUMENTS_TOPIC_CHECKPOINT)
    return source_lag(kafka.require_bootstrap(), kafka.options, kafka.documents_topic, checkpoint)


def _ingest_document_events(
    session, lakehouse: LakehouseResource, kafka: KafkaResource, run_id: str
) -> tuple[int, int, int]:
    """Stream the documents topic's new events into bronze, exactly once; returns the events ingested,
    the unreadable ones, and the stream batches run."""
    before = lakehouse.version(BRONZE)
    batches = stream_topic(
        session,
        lakehouse,
        BRONZE,
        lakehouse.checkpoint_path(DOCUMENTS_TOPIC_CHECKPOINT),
        kafka.documents_topic,
        kafka.require_bootstrap(),
        kafka.options,
        lambda messages: document_event_records(messages, run_id),
        kafka.max_offsets_per_batch,
    )
    new = lakehouse.changes(session, BRONZE, before).where("_change_type = 'insert'")
    stats = new.agg(F.count("*").alias("n"), F.count("parse_error").alias("failed")).first()
    return stats["n"], stats["failed"], batches


@asset(group_name="bronze", kinds={"spark", "delta"})
@transient_retries
def bronze_documents(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, kafka: KafkaResource
) -> MaterializeResult:
    """Every document file as landed (path, sha256, size, mtime, access groups, extracted text, title),
    and every event of the documents topic when one is configured (``GROUNDWORK_DOCUMENTS_TOPIC``).

    Append-only. New files arrive through a Structured Streaming query (exactly once, checkpointed);
    a listing then records what the stream cannot see: in-place rewrites, access-rule changes, empty
    files, and a tombstone for each removed file. Document events arrive through their own stream
    (``assets/documents/topics.py``), each a record like a landed file's with its topic provenance.
    """
    if kafka.documents_topic:  # declared: a missing cluster fails first, never a skipped source
        kafka.require_bootstrap()
    root = lakehouse.landing_path(DOCUMENTS)
    checkpoint = lakehouse.checkpoint_path(BRONZE)
    options = lakehouse.storage_options
    rules = load_access_rules(root, options)
    state = landing_state(root, options)
    added = deleted = failed = batches = 0
    if not already_ingested(checkpoint, state, options):
        added, deleted, failed, batches = _ingest_documents(
            spark.session(), lakehouse, root, checkpoint, rules, context.run_id
        )
        mark_ingested(checkpoint, state, options)
    events = {}
    if kafka.documents_topic:
        lag = documents_topic_lag(lakehouse, kafka)
        ingested = unreadable = topic_batches = 0
        if lag and sum(lag.values()):
            ingested, unreadable, topic_batches = _ingest_document_events(
                spark.session(), lakehouse, kafka, context.run_id
            )
            lag = documents_topic_lag(lakehouse, kafka)
        events = {
            "topic": kafka.documents_topic,
            "events_ingested": ingested,
            "events_unreadable": unreadable,
            "topic_stream_batches": topic_batches,
            **lag_metadata(kafka.documents_topic, lag),
        }
    context.log.info(
        "bronze_documents: %d new or changed files (%d unreadable), %d removed, in %d stream batches",
        added,
        failed,
        deleted,
        batches,
    )
    return MaterializeResult(
        metadata=delta_metadata(
            lakehouse,
            BRONZE,
            BRONZE_DOCUMENTS_SCHEMA,
            landing_path=root,
            files_added=added,
            files_unreadable=failed,
            files_removed=deleted,
            stream_batches=batches,
            **events,
        )
    )


# A silver row is rewritten only when its content or its readers changed (Spark SQL and delta-rs alike).
SILVER_CHANGED = "(s.sha256 IS DISTINCT FROM t.sha256) OR (s.access_groups IS DISTINCT FROM t.access_groups)"


def applied_by(small: SmallIncrement | None, increment) -> str:
    """Which engine applied a run's increment (materialization metadata): ``in-process`` (delta-rs and
    pandas, a small increment), ``spark``, or ``nothing new``."""
    return "in-process" if small is not None else "spark" if increment is not None else "nothing new"


def apply_small_silver_documents(
    lakehouse: LakehouseResource, increment: SmallIncrement, run_id: str
) -> dict:
    """``silver_documents``' Spark increment, in-process: the same split (``split_silver_rows``), the same
    quarantine rows, one delta-rs MERGE with the same transaction id, the same reconciliation."""
    import pandas as pd
    import pyarrow as pa

    changes = increment.changes.to_pandas()
    changes = changes[changes["_change_type"] == "insert"].drop(columns=["_change_type", "_commit_version"])
    latest = latest_bronze_rows(changes)
    live_silver = (
        lakehouse.read_arrow(SILVER, ["document_id", "sha256", "path"]).to_pandas()
        if lakehouse.exists(SILVER)
        else pd.DataFrame(columns=["document_id", "sha256", "path"])
    )
    accepted, rejected, removed = split_silver_rows(latest, live_silver)
    accepted = accepted.assign(bronze_version=increment.upstream_version)
    source_file, line, record_key = document_provenance_rows(rejected)
    for layer, rows in {
        "bronze": rejected["parse_error"].notna(),
        "silver": rejected["parse_error"].isna(),
    }.items():
        shaped = quarantine_rows(
            rejected[rows],
            DOCUMENTS,
            source_file[rows],
            line[rows],
            record_key[rows],
            rejected["text"][rows],
        )
        write_quarantine(lakehouse, layer, shaped, increment.txn)
    bronze_schema = increment.changes.schema
    schema = lakehouse.arrow_schema(SILVER) or pa.schema(
        [
            *(bronze_schema.field(c) for c in [*SILVER_FROM_BRONZE, "ingested_at"]),
            pa.field("bronze_version", pa.int64()),
        ]
    )
    gone = sorted(set(removed) - set(accepted["document_id"]))
    upserts = (
        pa.Table.from_pandas(accepted[schema.names], schema=schema, preserve_index=False)
        if len(accepted)
        else schema.empty_table()
    )
    deletes = pa.table(
        [pa.array(gone, f.type) if f.name == "document_id" else pa.nulls(len(gone), f.type) for f in schema],
        schema=schema,
    )
    rows = pa.concat_tables([upserts, deletes]).append_column(
        "_delete", pa.array([False] * upserts.num_rows + [True] * len(gone), pa.bool_())
    )
    lakehouse.merge_arrow(rows, SILVER, ["document_id"], changed_when=SILVER_CHANGED, txn=increment.txn)
    duplicates = int(rejected["reason"].str.startswith("duplicate:").sum())
    deleted = latest["is_deleted"].astype(bool)
    return record_ingestion_run(
        lakehouse,
        DOCUMENTS,
        run_id,
        landed=int((~deleted).sum()),
        accepted=len(accepted),
        quarantined=len(rejected) - duplicates,
        duplicates=duplicates,
        deleted=int(deleted.sum()),
    )


def document_provenance_rows(rejected):
    """``document_provenance`` for rejected rows in a pandas frame: three aligned Series."""
    import pandas as pd

    if "_topic" not in rejected.columns:
        return rejected["path"], pd.Series(None, index=rejected.index, dtype="Int64"), rejected["sha256"]
    from_topic = rejected["_topic"].notna()
    offset = rejected["_offset"].astype("Int64")
    kafka = (
        "kafka:" + rejected["_topic"].astype(str) + "/" + rejected["_partition"].astype("Int64").astype(str)
    )
    return (
        kafka.where(from_topic, rejected["path"]),
        offset.where(from_topic),
        (kafka + ":" + offset.astype(str)).where(from_topic, rejected["sha256"]),
    )


def document_provenance(rejected) -> tuple[Column, Column, Column]:
    """(source_file, line, record_key) of a rejected document in the quarantine: a file's path and its
    sha256, or for a topic's event ``kafka:<topic>/<partition>`` at its offset (``...:<offset>``)."""
    if "_topic" not in rejected.columns:
        return F.col("path"), F.lit(None), F.col("sha256")
    kafka = F.concat(F.lit("kafka:"), F.col("_topic"), F.lit("/"), F.col("_partition").cast("string"))
    from_topic = F.col("_topic").isNotNull()
    return (
        F.when(from_topic, kafka).otherwise(F.col("path")),
        F.when(from_topic, F.col("_offset")),
        F.when(from_topic, F.concat(kafka, F.lit(":"), F.col("_offset").cast("string"))).otherwise(
            F.col("sha256")
        ),
    )


@asset(
    group_name="silver",
    kinds={"spark", "delta"},
    deps=[bronze_documents],
    automation_condition=DOWNSTREAM_OF_BRONZE,
)
@transient_retries
def silver_documents(
    context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource
) -> MaterializeResult:
    """One clean row per live document; unreadable files and duplicate copies go to quarantine.

    Reads only the bronze records added since the last run (Change Data Feed) and applies them with
    one idempotent MERGE; the bronze version it has applied is stored in silver's Delta log, so a
    re-run after a crash neither skips nor repeats a change. A small increment (a document event, a
    few files) is applied in-process with the same rules (``apply_small_silver_documents``).
    """
    counts = {"landed": 0, "accepted": 0, "quarantined": 0, "duplicates": 0, "deleted": 0}
    small, increment = pending_increments(spark, lakehouse, BRONZE, SILVER)
    if small is not None:
        counts = apply_small_silver_documents(lakehouse, small, context.run_id)
    if increment is not None:
        session = increment.session
        changes = increment.changes.where("_change_type = 'insert'")
        latest = latest_bronze(changes.drop("_change_type", "_commit_version")).cache()
        live_silver = (
            lakehouse.read(session, SILVER)
            if lakehouse.exists(SILVER)
            else latest.limit(0).select(*SILVER_FROM_BRONZE)
        )
        accepted, rejected, removed = split_silver_documents(latest, live_silver)
        version = F.lit(increment.upstream_version).cast("long")
        accepted = accepted.withColumn("bronze_version", version).cache()
        rejected = rejected.cache()
        quarantine_rejected(
            increment,
            lakehouse,
            {
                "bronze": rejected.where(F.col("parse_error").isNotNull()),
                "silver": rejected.where(F.col("parse_error").isNull()),
            },
            DOCUMENTS,
            *document_provenance(rejected),
            F.col("text"),
        )
        upserts = accepted.withColumn("_delete", F.lit(False))
        deletes = removed.join(accepted.select("document_id"), "document_id", "left_anti")
        deletes = deletes.select(
            "document_id", *[F.lit(None).cast(f.dataType).alias(f.name) for f in upserts.schema.fields[1:-1]]
        ).withColumn("_delete", F.lit(True))
        lakehouse.apply_changes(
            session,
            upserts.unionByName(deletes),
            SILVER,
            ["document_id"],
            changed_when=SILVER_CHANGED,
            txn=increment.txn,
        )
        # One aggregation per cached frame instead of a Spark job per count.
        is_duplicate = F.col("reason").startswith("duplicate:")
        rejects = rejected.agg(F.count("*").alias("n"), F.count_if(is_duplicate).alias("dup")).first()
        landed = latest.agg(
            F.count_if(~F.col("is_deleted")).alias("live"), F.count_if("is_deleted").alias("gone")
        )
        landed = landed.first()
        counts = record_ingestion_run(
            lakehouse,
            DOCUMENTS,
            context.run_id,
            landed=landed["live"],
            accepted=accepted.count(),
            quarantined=rejects["n"] - rejects["dup"],
            duplicates=rejects["dup"],
            deleted=landed["gone"],
        )
        rejected.unpersist()
        latest.unpersist()
    return MaterializeResult(
        metadata=delta_metadata(
            lakehouse,
            SILVER,
            None,
            **{"dagster/column_lineage": SILVER_DOCUMENTS_LINEAGE},
            **{f"documents_{k}": v for k, v in counts.items()},
            bronze_version=lakehouse.version(BRONZE),
            applied_by=applied_by(small, increment),
        )
    )
