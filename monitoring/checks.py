"""The monitoring asset checks: the evaluation trend, embedding, query and structured-data drift.

Each check's work is a plain function (``monitoring.trend``, ``drift``, ``queries``, ``data``); here it is
wired to Dagster: the figures go in the check's metadata with a link to its HTML report under
GROUNDWORK_HOME, a row to the ``monitoring_results`` Delta table and a run to MLflow. Drift checks warn;
the trend check warns or, with ``GROUNDWORK_MONITOR_TREND_SEVERITY=block``, blocks (docs/monitoring.md).
A check that cannot judge (too few rows, nothing recorded yet) passes and says why.
"""

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetSpec,
    MetadataValue,
    asset_check,
)

from assets.automation import WITH_ITS_ASSET
from assets.structured.contracts import SourceContract, load_sources
from monitoring.data import assess_table, compared_columns
from monitoring.drift import EMBEDDING_METHOD, embedding_drift
from monitoring.queries import assess_queries
from monitoring.report import write_report
from monitoring.store import CheckResult, evaluation_history, record_result, rejected_runs
from monitoring.trend import compare_with_baseline
from resources import (
    EmbedderResource,
    LakehouseResource,
    LanceDBResource,
    MLflowResource,
    MonitoringResource,
    Settings,
)
from resources.lakehouse import read_table
from resources.lancedb.tables import activate, activation_history, open_active
from resources.monitoring import Monitoring
from serving.audit import audit_since

log = logging.getLogger(__name__)
MONITORING_EXPERIMENT = "groundwork-monitoring"
REFERENCE_SAMPLE = 2000  # reference vectors read from the index: enough for a centroid and a KS test
# The audit log is written by `groundwork serve`, not by the pipeline: an external asset for the query check.
serving_audit = AssetSpec(
    "serving_audit",
    group_name="monitoring",
    kinds={"delta"},
    description="The serving audit log (GROUNDWORK_AUDIT_URI), one row per API request; written by "
    "`groundwork serve`, read by the query drift check.",
)


def publish(
    context: AssetCheckExecutionContext,
    monitoring: Monitoring,
    mlflow: MLflowResource,
    result: CheckResult,
    method: str = "",
    samples: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> AssetCheckResult:
    """Report, Delta row, MLflow run and the Dagster check result of one monitoring check."""
    report = write_report(
        monitoring.reports_path, result.check_name, result.summary, result.figures, samples, method
    )
    result = CheckResult(**{**result.__dict__, "report": str(report)})
    record_result(monitoring.results_uri, result, context.run.run_id, monitoring.storage_options)
    try:
        _log_to_mlflow(mlflow, result, context.run.run_id)
    except Exception as exc:  # the check's verdict stands without its MLflow copy
        log.warning("monitoring: could not log %s to MLflow: %s", result.check_name, exc)
    numbers = {
        k: float(v)
        for k, v in result.figures.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    others = {k: str(v) for k, v in result.figures.items() if k not in numbers}
    severity = AssetCheckSeverity.ERROR if result.severity == "block" else AssetCheckSeverity.WARN
    return AssetCheckResult(
        passed=not result.alert,
        severity=severity,
        metadata={
            "summary": result.summary,
            "judged": result.judged,
            **numbers,
            **others,
            "method": method,
            "report": MetadataValue.url(report.as_uri()),
            "report_path": MetadataValue.path(str(report)),
            "results_table": MetadataValue.path(monitoring.results_uri),
        },
    )


def _log_to_mlflow(tracking: MLflowResource, result: CheckResult, run_id: str) -> None:
    mlflow = tracking.configure()
    experiment = tracking.experiment_id(MONITORING_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment, run_name=result.check_name):
        mlflow.set_tags(
            {
                "check": result.check_name,
                "asset": result.asset,
                "alert": str(result.alert),
                "dagster_run_id": run_id,
            }
        )
        numbers = {
            k: float(v)
            for k, v in result.figures.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        mlflow.log_metrics({**numbers, "alert": float(result.alert)})
        if result.report:
            mlflow.log_artifact(result.report)


def trend_check(settings: Settings) -> AssetChecksDefinition:
    """The evaluation trend; blocking when the severity setting says block."""
    block = settings.monitor_trend_severity == "block"

    @asset_check(
        asset="retrieval_evaluation",
        name="evaluation_trend",
        blocking=block,
        automation_condition=WITH_ITS_ASSET,
        description="MRR@10 and nDCG@10 of the newest evaluation against the champion's recorded baseline.",
    )
    def evaluation_trend(
        context: AssetCheckExecutionContext,
        monitoring: MonitoringResource,
        mlflow: MLflowResource,
        lancedb: LanceDBResource,
    ) -> AssetCheckResult:
        trend = compare_with_baseline(
            evaluation_history(monitoring.history_uri, monitoring.storage_options),
            monitoring.trend_tolerance,
            rejected_runs(monitoring.results_uri, monitoring.storage_options),
        )
        summary = trend.summary
        if trend.failed and monitoring.trend_severity == "block":
            summary += _restore_baseline_table(lancedb, trend.newest, trend.baseline)
        result = CheckResult(
            "evaluation_trend",
            "retrieval_evaluation",
            trend.failed,
            trend.judged,
            summary,
            trend.figures,
            severity=monitoring.trend_severity,
        )
        method = "per search mode, newest minus baseline MRR@10 and nDCG@10; fails below -tolerance"
        return publish(context, monitoring, mlflow, result, method)

    return evaluation_trend


def _restore_baseline_table(lancedb: LanceDBResource, newest: list[dict], baseline: list[dict]) -> str:
    """Block: when the newest run evaluated another table than the baseline's (a new model's) and that
    table is active, serving goes back to the baseline's table."""
    db = lancedb.connect()
    history = activation_history(db, lancedb.table_name)
    active = history[-1]["table_name"] if history else None
    new_table, base_table = newest[0]["lancedb_table"], baseline[0]["lancedb_table"]
    if new_table != base_table and active == new_table:
        activate(db, lancedb.table_name, base_table)
        return f"; blocked: the active index moved back from {new_table} to {base_table}"
    return "; blocked: the downstream steps do not run (the same table: its rows stay active)"


@asset_check(
    asset="chunk_embeddings",
    name="embedding_drift",
    automation_condition=WITH_ITS_ASSET,
    description="The newest batch of embedded chunks against a reference sample of the rest of the index.",
)
def embedding_drift_check(
    context: AssetCheckExecutionContext,
    monitoring: MonitoringResource,
    mlflow: MLflowResource,
    lancedb: LanceDBResource,
) -> AssetCheckResult:
    table = open_active(lancedb.connect(), lancedb.table_name)
    reference, current, batch = np.empty((0, 0)), np.empty((0, 0)), None
    if table is not None:
        reference, current, batch = newest_batch(table.to_lance(), REFERENCE_SAMPLE)
    drift = embedding_drift(
        reference,
        current,
        alpha=monitoring.alpha,
        min_distance=monitoring.embedding_min_distance,
        min_rows=monitoring.min_rows,
    )
    summary = (
        f"chunks of gold version {batch}: {drift.detail}"
        if drift.judged
        else f"not judged: {drift.detail or 'no index yet'}"
    )
    figures = {**drift.figures(), "batch_delta_version": batch if batch is not None else -1}
    result = CheckResult("embedding_drift", "chunk_embeddings", drift.alert, drift.judged, summary, figures)
    samples = {"similarity to the reference centroid": (drift.reference_values, drift.current_values)}
    return publish(context, monitoring, mlflow, result, EMBEDDING_METHOD, samples)


def newest_batch(dataset, reference_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Vectors of a random reference sample of the older chunks, those of the newest batch (the highest
    ``delta_version``), and that version; only the sampled rows' vectors are read (positions, then take)."""
    versions = dataset.to_table(columns=["delta_version"])["delta_version"].to_numpy(zero_copy_only=False)
    versions = np.where(np.isnan(versions.astype(float)), -1, versions).astype(np.int64)
    if not len(versions) or versions.max() < 0:
        return np.empty((0, 0)), np.empty((0, 0)), None
    batch = int(versions.max())
    older = np.flatnonzero((versions < batch) & (versions >= 0))
    if len(older) > reference_size:
        older = np.sort(np.random.default_rng(seed).choice(older, reference_size, replace=False))

    def vectors(positions: np.ndarray) -> np.ndarray:
        if not len(positions):
            return np.empty((0, 0))
        column = dataset.take(positions.tolist(), columns=["vector"])["vector"]
        return np.asarray(column.to_pylist(), dtype=np.float32)

    return vectors(older), vectors(np.flatnonzero(versions == batch)), batch


@asset_check(
    asset="serving_audit",
    name="query_drift",
    description="The last day's queries: unanswered rate under the calibrated threshold, centroid shift.",
)
def query_drift_check(
    context: AssetCheckExecutionContext,
    monitoring: MonitoringResource,
    mlflow: MLflowResource,
    embedder: EmbedderResource,
) -> AssetCheckResult:
    from models.model_registry import pipeline_embedder

    now = datetime.now(UTC)
    audit = audit_since(
        monitoring.audit_uri, now - timedelta(days=1 + monitoring.reference_days), monitoring.storage_options
    )

    def embed(texts):
        return pipeline_embedder(mlflow, embedder).encode(list(texts))

    found = assess_queries(
        audit,
        now,
        threshold=monitoring.answer_min_similarity,
        unanswered_max=monitoring.unanswered_max,
        reference_days=monitoring.reference_days,
        embed=embed,
        alpha=monitoring.alpha,
        min_distance=monitoring.embedding_min_distance,
        min_rows=monitoring.min_rows,
    )
    result = CheckResult(
        "query_drift", "serving_audit", found.alert, found.judged, found.summary, found.figures
    )
    samples = {"best similarity per query": found.unanswered}
    if found.centroid is not None:
        samples["similarity to the reference query centroid"] = (
            found.centroid.reference_values,
            found.centroid.current_values,
        )
    method = "share of best similarities under GROUNDWORK_ANSWER_MIN_SIMILARITY; " + EMBEDDING_METHOD
    return publish(context, monitoring, mlflow, result, method, samples)


def data_drift_check(contract: SourceContract) -> AssetChecksDefinition:
    table = f"silver_{contract.name}"
    columns = compared_columns(contract)

    @asset_check(
        asset=AssetKey(table),
        name=f"{table}_drift",
        automation_condition=WITH_ITS_ASSET,
        description=f"{table}'s newest event day against its reference window: "
        + (", ".join(columns) or "no comparable columns"),
    )
    def check(
        context: AssetCheckExecutionContext,
        monitoring: MonitoringResource,
        mlflow: MLflowResource,
        lakehouse: LakehouseResource,
    ) -> AssetCheckResult:
        rows = None
        if lakehouse.exists(table) and contract.event_time:
            rows = read_table(
                lakehouse.table_path(table), [contract.event_time, *columns], lakehouse.storage_options
            )
        if rows is None:
            found = None
            result = CheckResult(
                f"{table}_drift", table, False, False, "no table or no event time to compare"
            )
        else:
            found = assess_table(
                rows,
                contract.event_time,
                columns,
                reference_days=monitoring.reference_days,
                alpha=monitoring.alpha,
                psi_max=monitoring.psi_max,
                min_rows=monitoring.min_rows,
            )
            result = CheckResult(
                f"{table}_drift", table, found.alert, found.judged, found.summary, found.figures
            )
        samples = {
            n: (d.reference_values, d.current_values) for n, d in (found.columns if found else {}).items()
        }
        method = "per column: numbers PSI + KS test, categories PSI + chi-square; an alert needs PSI over "
        method += "the maximum and p under alpha"
        return publish(context, monitoring, mlflow, result, method, samples)

    return check


def monitoring_checks(settings: Settings) -> list[AssetChecksDefinition]:
    """Every monitoring check, for one settings object."""
    sources = load_sources(Path(settings.sources_file)) if Path(settings.sources_file).is_file() else []
    return [
        trend_check(settings),
        embedding_drift_check,
        query_drift_check,
        *[data_drift_check(c) for c in sources if c.event_time],
    ]
