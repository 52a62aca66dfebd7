"""Blocking Dagster asset checks that run the suites on every layer: a failure stops everything downstream.

Each check persists its per-expectation results to the ``quality_results`` Delta table and refreshes
the Great Expectations Data Docs, linked from the check's metadata.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from assets.automation import WITH_ITS_ASSET
from assets.embeddings.index import open_active
from assets.structured.contracts import SourceContract, load_sources
from pipelines.retries import transient_retries
from quality import suites
from quality.validation import SuiteOutcome
from resources import LakehouseResource, LanceDBResource, QualityResource, SparkResource

RESULTS_TABLE = "quality_results"
Loader = Callable[[SparkSession, LakehouseResource, LanceDBResource], tuple[object, list]]


def persist_results(
    spark: SparkSession,
    lakehouse: LakehouseResource,
    outcome: SuiteOutcome,
    table: str,
    version: int | None,
    run_id: str,
) -> None:
    rows = [
        (outcome.suite, o.expectation, o.column, o.success, o.observed_json(), run_id, table, version)
        for o in outcome.outcomes
    ]
    schema = (
        "suite string, expectation string, column string, success boolean, observed_value string, "
        "run_id string, table_name string, table_version long"
    )
    frame = spark.createDataFrame(rows, schema).withColumn("validated_at", F.current_timestamp())
    lakehouse.append(frame, RESULTS_TABLE)


def make_check(table: str, loader: Loader, engine: str = "delta") -> AssetChecksDefinition:
    @asset_check(
        asset=table,
        name=f"{table}_expectations",
        blocking=True,
        automation_condition=WITH_ITS_ASSET,
        description=f"Great Expectations suite for {table}; blocks downstream assets when it fails.",
    )
    @transient_retries
    def check(
        context: AssetCheckExecutionContext,
        spark: SparkResource,
        lakehouse: LakehouseResource,
        lancedb: LanceDBResource,
        quality: QualityResource,
    ) -> AssetCheckResult:
        session = spark.session()
        data, expectations = loader(session, lakehouse, lancedb)
        version = lakehouse.version(table) if engine == "delta" else _lancedb_version(lancedb)
        outcome = quality.validate(data, table, expectations, run_name=context.run.run_id)
        persist_results(session, lakehouse, outcome, table, version, context.run.run_id)
        metadata = {
            "expectations": len(outcome.outcomes),
            "failed": [f"{o.expectation}({o.column}): {o.observed_json()[:300]}" for o in outcome.failed],
            f"{engine}_version": version,
            "results_table": MetadataValue.path(lakehouse.table_path(RESULTS_TABLE)),
        }
        if outcome.docs_url:
            metadata["data_docs"] = MetadataValue.url(outcome.docs_url)
        return AssetCheckResult(passed=outcome.success, severity=AssetCheckSeverity.ERROR, metadata=metadata)

    return check


def _lancedb_version(lancedb: LanceDBResource) -> int | None:
    table = open_active(lancedb.connect(), lancedb.table_name)
    return table.version if table is not None else None


def _table(table: str, suite: Callable[[], list]) -> Loader:
    return lambda spark, lakehouse, _: (lakehouse.read(spark, table), suite())


def _bronze_source(contract: SourceContract) -> Loader:
    def load(spark: SparkSession, lakehouse: LakehouseResource, _) -> tuple[DataFrame, list]:
        bronze = lakehouse.read(spark, f"bronze_{contract.name}")
        keys = [F.col("record").getItem(k).alias(k) for k in contract.primary_key]
        return bronze.select("_source_file", "_line", *keys), suites.bronze_source_suite(contract)

    return load


def _silver_source(contract: SourceContract) -> Loader:
    def load(spark: SparkSession, lakehouse: LakehouseResource, _) -> tuple[DataFrame, list]:
        reference_keys = {
            ref.source: [
                r[0]
                for r in lakehouse.read(spark, f"silver_{ref.source}").select(ref.key).distinct().collect()
            ]
            for ref in contract.references
        }
        return lakehouse.read(spark, f"silver_{contract.name}"), suites.silver_source_suite(
            contract, reference_keys
        )

    return load


def embedding_frame(table) -> pd.DataFrame:
    """Per vector: chunk id, dimension, norm and NaN flag, for the embeddings suite."""
    rows = table.search().select(["chunk_id", "vector"]).limit(None).to_arrow()
    vectors = np.stack(rows["vector"].to_numpy(zero_copy_only=False)) if rows.num_rows else np.zeros((0, 0))
    return pd.DataFrame(
        {
            "chunk_id": rows["chunk_id"].to_pylist(),
            "dimension": [vectors.shape[1]] * rows.num_rows,
            "norm": np.linalg.norm(vectors, axis=1) if rows.num_rows else [],
            "has_nan": np.isnan(vectors).any(axis=1) if rows.num_rows else [],
        }
    )


def _embeddings(
    spark: SparkSession, lakehouse: LakehouseResource, lancedb: LanceDBResource
) -> tuple[pd.DataFrame, list]:
    gold_chunks = lakehouse.read_arrow("document_chunks", ["chunk_id"]).num_rows
    table = open_active(lancedb.connect(), lancedb.table_name)
    dimension = table.schema.field("vector").type.list_size
    return embedding_frame(table), suites.chunk_embeddings_suite(gold_chunks, dimension)


def quality_checks(sources_file: Path) -> list[AssetChecksDefinition]:
    checks = [
        make_check("bronze_documents", _table("bronze_documents", suites.bronze_documents_suite)),
        make_check("silver_documents", _table("silver_documents", suites.silver_documents_suite)),
        make_check("document_chunks", _table("document_chunks", suites.document_chunks_suite)),
        make_check("chunk_embeddings", _embeddings, engine="lancedb"),
    ]
    for contract in load_sources(sources_file):
        checks.append(make_check(f"bronze_{contract.name}", _bronze_source(contract)))
        checks.append(make_check(f"silver_{contract.name}", _silver_source(contract)))
    return checks
