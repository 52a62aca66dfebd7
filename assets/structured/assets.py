"""``bronze_<source>`` and ``silver_<source>`` for every source declared in ``sources.yaml``."""

from pathlib import Path

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset
from pyspark.sql import functions as F

from assets.landing import list_landing
from assets.metadata import column_lineage, delta_metadata
from assets.quarantine import to_quarantine, write_quarantine
from assets.structured.contracts import SourceContract, load_sources
from assets.structured.transform import protect_pii, read_landed_records, split_silver_records
from resources import LakehouseResource, PrivacyResource, SparkResource


def source_assets(contract: SourceContract) -> list[AssetsDefinition]:
    bronze_name, silver_name = f"bronze_{contract.name}", f"silver_{contract.name}"

    @asset(
        name=bronze_name,
        group_name="bronze",
        kinds={"spark", "delta"},
        description=(
            f"{contract.description} Every record as landed ({contract.format}), with its file and line."
        ),
    )
    def bronze(
        context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource
    ) -> MaterializeResult:
        session = spark.session()
        root = lakehouse.landing_path(contract.name)
        known = lakehouse.read(session, bronze_name) if lakehouse.exists(bronze_name) else None
        records = (
            read_landed_records(session, contract, list_landing(root), known)
            .withColumns({"_ingested_at": F.current_timestamp(), "_run_id": F.lit(context.run_id)})
            .cache()
        )
        stats = records.agg(
            F.count("*").alias("records"),
            F.count("_error").alias("unreadable"),
            F.countDistinct("_source_file").alias("files"),
        ).first()
        if stats["records"] or known is None:  # the first run creates the table even when nothing landed
            lakehouse.append(records, bronze_name)
        schema = records.schema
        records.unpersist()
        return MaterializeResult(
            metadata=delta_metadata(
                lakehouse,
                bronze_name,
                schema,
                landing_path=root,
                files_ingested=stats["files"],
                records_landed=stats["records"],
                records_unreadable=stats["unreadable"],
            )
        )

    lineage = column_lineage(
        {column: [(bronze_name, "record")] for column in contract.column_names}
        | {
            "_source_file": [(bronze_name, "_source_file")],
            "_line": [(bronze_name, "_line")],
            "_bronze_ingested_at": [(bronze_name, "_ingested_at")],
        }
    )

    @asset(
        name=silver_name,
        group_name="silver",
        kinds={"spark", "delta"},
        deps=[bronze, *(AssetKey(f"silver_{r.source}") for r in contract.references)],
        description=(
            f"{contract.description} Typed by its contract, one row per {', '.join(contract.primary_key)} "
            "(latest event time wins); rejected rows go to the quarantine with a reason."
        ),
    )
    def silver(
        context: AssetExecutionContext,
        spark: SparkResource,
        lakehouse: LakehouseResource,
        privacy: PrivacyResource,
    ) -> MaterializeResult:
        session = spark.session()
        bronze_version = lakehouse.version(bronze_name)
        referenced = {r.source: lakehouse.read(session, f"silver_{r.source}") for r in contract.references}
        accepted, rejected, superseded = split_silver_records(
            lakehouse.read(session, bronze_name), contract, referenced
        )
        accepted = protect_pii(accepted, contract, privacy.key())
        accepted = accepted.withColumn("_bronze_version", F.lit(bronze_version).cast("long")).cache()
        changed = " OR ".join(f"NOT (s.`{c}` <=> t.`{c}`)" for c in contract.column_names)
        lakehouse.merge(
            session, accepted, silver_name, contract.primary_key, changed_when=changed, delete_missing=True
        )
        rejected = rejected.withColumn("run_id", F.lit(context.run_id)).cache()
        quarantined = rejected.count()
        if quarantined:
            key = F.concat_ws(
                ":", F.col("_source_file"), F.coalesce(F.col("_line").cast("string"), F.lit(""))
            )
            write_quarantine(
                session,
                lakehouse,
                to_quarantine(rejected, "silver", contract.name, F.col("_source_file"), key, F.col("_raw")),
            )
        accepted_count, superseded_count = accepted.count(), superseded.count()
        schema = accepted.schema
        accepted.unpersist()
        rejected.unpersist()
        return MaterializeResult(
            metadata=delta_metadata(
                lakehouse,
                silver_name,
                schema,
                **{"dagster/column_lineage": lineage},
                **{f"silver_{name}_version": lakehouse.version(f"silver_{name}") for name in referenced},
                records_landed=accepted_count + quarantined + superseded_count,
                records_accepted=accepted_count,
                records_quarantined=quarantined,
                records_superseded=superseded_count,
                bronze_version=bronze_version,
            )
        )

    return [bronze, silver]


def structured_assets(sources_file: Path) -> list[AssetsDefinition]:
    return [a for contract in load_sources(sources_file) for a in source_assets(contract)]
