"""Blocking Dagster asset checks that run the suites on every layer: a failure stops everything downstream.

Each check persists its per-expectation results to the ``quality_results`` Delta table and refreshes
the Great Expectations Data Docs, linked from the check's metadata. A table small enough to hold in
memory (``GROUNDWORK_QUALITY_PANDAS_MAX_ROWS``) is read with delta-rs and validated as pandas: the same
expectations, without a Spark job per expectation; a larger one is validated in Spark.
"""

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)
from deltalake import write_deltalake
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from assets.automation import WITH_ITS_ASSET
from assets.retries import transient_retries
from assets.structured.contracts import SourceContract, load_sources
from quality import suites
from quality.suites import embedding_frame
from quality.validation import SuiteOutcome
from resources import LakehouseResource, LanceDBResource, QualityResource, SparkResource
from resources.lakehouse import Lakehouse, commit_retried, storage_options_for
from resources.lancedb.tables import open_active
from resources.quality import Quality
from resources.spark import Spark

RESULTS_TABLE = "quality_results"
RESULTS_SCHEMA = pa.schema(
    [
        pa.field("suite", pa.string()),
        pa.field("expectation", pa.string()),
        pa.field("column", pa.string()),
        pa.field("success", pa.bool_()),
        pa.field("observed_value", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("table_name", pa.string()),
        pa.field("table_version", pa.int64()),
        pa.field("validated_at", pa.timestamp("us", tz="UTC")),
        # The suite's expectations with their arguments (``suite_fingerprint``).
        pa.field("suite_sha256", pa.string()),
    ]
)
Frame = pd.DataFrame | DataFrame
Loader = Callable[[Spark, Lakehouse, LanceDBResource, Quality], tuple[Frame, list]]


def suite_fingerprint(expectations: list) -> str:
    """The suite's expectations with their arguments: one whose argument depends on the time (freshness
    against now) differs on every run, so only a suite that cannot change its verdict is reused."""
    configs = [e.configuration.to_json_dict() for e in expectations]
    return hashlib.sha256(json.dumps(configs, sort_keys=True, default=str).encode()).hexdigest()


def passed_before(
    lakehouse: Lakehouse, table: str, version: int | None, fingerprint: str, expectations: int
) -> str | None:
    """The run in which this table version passed this very suite, if any (its verdict cannot differ)."""
    if version is None or not lakehouse.exists(RESULTS_TABLE):
        return None
    if "suite_sha256" not in lakehouse.schema(RESULTS_TABLE).fieldNames():
        return None  # recorded before suites were fingerprinted
    where = (
        (pc.field("table_name") == table)
        & (pc.field("table_version") == version)
        & (pc.field("suite_sha256") == fingerprint)
    )
    rows = lakehouse.read_arrow(RESULTS_TABLE, ["run_id", "success"], where).to_pylist()
    runs: dict[str, list[bool]] = {}
    for row in rows:
        runs.setdefault(row["run_id"], []).append(row["success"])
    passed = [run for run, results in runs.items() if len(results) == expectations and all(results)]
    return passed[-1] if passed else None


def persist_results(
    lakehouse: Lakehouse,
    outcome: SuiteOutcome,
    table: str,
    version: int | None,
    run_id: str,
    fingerprint: str | None = None,
) -> bool:
    """One small append with delta-rs (milliseconds; a Spark write costs seconds on small data).

    A table version already recorded with the same outcome is not recorded again, so re-checking an
    unchanged table (a run with nothing new) commits nothing. Returns whether it recorded.
    """
    path = lakehouse.table_path(RESULTS_TABLE)
    return commit_retried(path, lambda: _record(lakehouse, outcome, run_id, table, version, fingerprint))


def _record(
    lakehouse: Lakehouse,
    outcome: SuiteOutcome,
    run_id: str,
    table: str,
    version: int | None,
    fingerprint: str | None,
) -> bool:
    if _recorded(lakehouse, outcome, table, version):
        return False
    now = datetime.now(UTC)
    rows = [
        {
            "suite": outcome.suite,
            "expectation": o.expectation,
            "column": o.column,
            "success": o.success,
            "observed_value": o.observed_json(),
            "run_id": run_id,
            "table_name": table,
            "table_version": version,
            "validated_at": now,
            "suite_sha256": fingerprint,
        }
        for o in outcome.outcomes
    ]
    path = lakehouse.table_path(RESULTS_TABLE)
    write_deltalake(
        path,
        pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA),
        mode="append",
        schema_mode="merge",  # a table recorded before a column was added gains it
        storage_options=storage_options_for(path, lakehouse.storage_options),
    )
    return True


def _recorded(lakehouse: Lakehouse, outcome: SuiteOutcome, table: str, version: int | None) -> bool:
    if version is None or not lakehouse.exists(RESULTS_TABLE):
        return False
    where = (pc.field("table_name") == table) & (pc.field("table_version") == version)
    columns = ["suite", "expectation", "column", "success"]
    earlier = lakehouse.read_arrow(RESULTS_TABLE, columns, where).to_pylist()
    mine = [
        dict(zip(columns, (outcome.suite, o.expectation, o.column, o.success), strict=True))
        for o in outcome.outcomes
    ]
    return bool(earlier) and all(row in earlier for row in mine) and all(row in mine for row in earlier)


def table_frame(
    spark: Spark, lakehouse: Lakehouse, quality: Quality, table: str, columns: list[str] | None = None
) -> Frame:
    """``table`` (or its ``columns``) as pandas when it is small enough, else as a Spark DataFrame.

    Timestamps become naive UTC in pandas, as Spark (session time zone UTC) shows them to the suites.
    """
    if lakehouse.row_count(table) <= quality.pandas_max_rows:
        frame = lakehouse.read_arrow(table, columns).to_pandas()
        for name in frame.columns:
            if isinstance(frame[name].dtype, pd.DatetimeTZDtype):
                frame[name] = frame[name].dt.tz_convert("UTC").dt.tz_localize(None)
        return frame
    rows = lakehouse.read(spark.session(), table)
    return rows.select(*columns) if columns else rows


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
        data, expectations = loader(spark, lakehouse, lancedb, quality)
        version = lakehouse.version(table) if engine == "delta" else _lancedb_version(lancedb)
        fingerprint = suite_fingerprint(expectations)
        earlier = passed_before(lakehouse, table, version, fingerprint, len(expectations))
        if earlier is not None:  # this table version passed these very expectations: the same result
            return AssetCheckResult(
                passed=True,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "expectations": len(expectations),
                    "failed": [],
                    f"{engine}_version": version,
                    "validated_with": f"the same table version and suite in run {earlier}",
                    "results_table": MetadataValue.path(lakehouse.table_path(RESULTS_TABLE)),
                },
            )
        outcome = quality.validate(data, table, expectations, run_name=context.run.run_id, docs=False)
        if persist_results(lakehouse, outcome, table, version, context.run.run_id, fingerprint):
            quality.update_docs(outcome)  # an outcome already recorded has its page already
        metadata = {
            "expectations": len(outcome.outcomes),
            "failed": [f"{o.expectation}({o.column}): {o.observed_json()[:300]}" for o in outcome.failed],
            f"{engine}_version": version,
            "validated_with": "pandas" if isinstance(data, pd.DataFrame) else "spark",
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
    return lambda spark, lakehouse, _, quality: (table_frame(spark, lakehouse, quality, table), suite())


def _bronze_source(contract: SourceContract) -> Loader:
    """Bronze records with the primary key pulled out of the landed record (a map of strings). A topic's
    message whose value could not be read still has its key: the message key, for a one-column key."""
    message_key = bool(contract.topic) and len(contract.primary_key) == 1

    def load(spark: Spark, lakehouse: Lakehouse, _, quality: Quality) -> tuple[Frame, list]:
        name = f"bronze_{contract.name}"
        extra = ["_key"] if message_key else []
        if lakehouse.row_count(name) <= quality.pandas_max_rows:
            landed = lakehouse.read_arrow(name, [*contract.provenance, *extra, "record"])
            keys = {k: pc.map_lookup(landed["record"], k, "first") for k in contract.primary_key}
            if message_key:
                keys = {k: pc.coalesce(v, landed["_key"]) for k, v in keys.items()}
            rows = (
                landed.drop_columns(["record", *extra])
                .to_pandas()
                .assign(**{k: v.to_pandas() for k, v in keys.items()})
            )
        else:
            keys = [F.col("record").getItem(k) for k in contract.primary_key]
            if message_key:
                keys = [F.coalesce(k, F.col("_key")) for k in keys]
            rows = lakehouse.read(spark.session(), name).select(
                *contract.provenance, *(k.alias(n) for k, n in zip(keys, contract.primary_key, strict=True))
            )
        return rows, suites.bronze_source_suite(contract)

    return load


def _silver_source(contract: SourceContract) -> Loader:
    def load(spark: Spark, lakehouse: Lakehouse, _, quality: Quality) -> tuple[Frame, list]:
        reference_keys = {
            ref.source: pc.unique(
                lakehouse.read_arrow(f"silver_{ref.source}", [ref.key])[ref.key]
            ).to_pylist()
            for ref in contract.references
        }
        rows = table_frame(spark, lakehouse, quality, f"silver_{contract.name}")
        return rows, suites.silver_source_suite(contract, reference_keys)

    return load


def _embeddings(
    spark: Spark, lakehouse: Lakehouse, lancedb: LanceDBResource, quality: Quality
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
