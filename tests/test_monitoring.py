"""Quality over time (docs/monitoring.md): drift is found on shifted data and not on a resample of the same
data; the trend check fails on a worse evaluation; the checks run in Dagster and `groundwork monitor`
exits non-zero on an alert. Real embeddings, Delta tables, Dagster check executions and MLflow on SQLite;
the false-alarm rate over many seeds is measured by benchmarks/drift.py, not here."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from conftest import make_settings, run_groundwork
from dagster import AssetSelection, AssetSpec, Definitions, define_asset_job
from deltalake import write_deltalake

from monitoring.checks import data_drift_check, embedding_drift_check, query_drift_check, trend_check
from monitoring.data import assess_table
from monitoring.drift import embedding_drift
from monitoring.queries import assess_queries
from monitoring.store import HISTORY_SCHEMA, evaluation_history, latest_results, record_evaluation
from resources import EmbedderResource, build_resources
from resources.lakehouse import read_table
from resources.lancedb.tables import activate, active_table_name, embeddings_schema
from resources.monitoring import Monitoring
from resources.settings import SAMPLES_DIR
from serving.audit import AuditLog, audit_since

# New documents on another topic than the samples' (a retailer's policies and FAQ).
OFF_TOPIC = [
    f"The {body} {verb} around its star every {n} days, and its {feature} was first observed by {who}."
    for n, (body, verb, feature, who) in enumerate(
        [
            ("exoplanet", "orbits", "atmosphere", "a space telescope"),
            ("brown dwarf", "circles", "magnetic field", "radio astronomers"),
            ("gas giant", "travels", "ring system", "an infrared survey"),
            ("comet", "swings", "ion tail", "amateur astronomers"),
            ("moon", "revolves", "ice crust", "a flyby probe"),
        ]
        * 6,
        start=3,
    )
]


@cache
def corpus_paragraphs() -> list[str]:
    paragraphs = [
        p.strip()
        for path in sorted((SAMPLES_DIR / "documents").rglob("*.md"))
        for p in path.read_text(encoding="utf-8").split("\n\n")
        if len(p.strip()) >= 40
    ]
    return paragraphs


@cache
def embed(texts: tuple[str, ...]) -> np.ndarray:
    return EmbedderResource().encode(list(texts))


def questions(name: str) -> list[str]:
    lines = (SAMPLES_DIR / "gold" / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["query"] for line in lines if line.strip()]


def test_embedding_drift_flags_another_topic_and_not_a_resample_of_the_index():
    vectors = embed(tuple(corpus_paragraphs()))
    order = np.random.default_rng(7).permutation(len(vectors))
    reference, same = vectors[order[:80]], vectors[order[80:]]
    unchanged = embedding_drift(reference, same, min_rows=20)
    assert unchanged.judged and not unchanged.alert, unchanged.detail
    shifted = embedding_drift(reference, embed(tuple(OFF_TOPIC)), min_rows=20)
    assert shifted.alert and shifted.effect > 0.1 and shifted.p_value < 1e-6, shifted.detail
    assert not embedding_drift(reference[:10], vectors[:5], min_rows=20).judged  # too few: no verdict


def _audit_rows(log: AuditLog, texts: list[str], day: datetime, passages: np.ndarray) -> None:
    best = embed(tuple(texts)) @ passages.T  # cosine similarity: the vectors are normalized
    for i, (text, similarity) in enumerate(zip(texts, best.max(axis=1), strict=True)):
        at = day + timedelta(minutes=i)
        log.record(
            request_id=f"{day:%Y%m%d}-{i}",
            at=at,
            caller="c",
            endpoint="POST /answer",
            status=200,
            query=text,
            best_similarity=float(similarity),
        )


@pytest.mark.parametrize("shifted", [False, True])
def test_query_drift_flags_a_day_of_questions_the_corpus_cannot_answer(tmp_path, shifted):
    """Audit rows written by the real audit log, read back from Delta: the reference days asked the gold
    questions; the last day asks either the same questions again or ones the corpus cannot answer."""
    passages = embed(tuple(corpus_paragraphs()))
    now = datetime.now(UTC)
    log = AuditLog(str(tmp_path / "audit"), flush_seconds=0.05)
    gold, unanswerable = questions("questions.jsonl"), questions("unanswerable.jsonl")
    for days_ago in (3, 2):
        _audit_rows(log, gold, now - timedelta(days=days_ago), passages)
    _audit_rows(log, unanswerable if shifted else gold[:12], now - timedelta(hours=12), passages)
    log.close()
    found = assess_queries(
        audit_since(str(tmp_path / "audit"), now - timedelta(days=8)),
        now,
        threshold=0.38,
        unanswered_max=0.3,
        reference_days=7,
        embed=lambda texts: embed(tuple(texts)),
        alpha=0.01,
        min_distance=0.05,
        min_rows=10,
    )
    assert found.figures["queries"] == 12 and found.figures["reference_queries"] == 30
    assert found.judged and found.centroid is not None and found.centroid.judged
    assert found.alert is shifted, found.summary
    if shifted:
        assert found.figures["unanswered_rate"] > 0.8 and found.centroid.alert
    else:  # a few gold questions sit near the threshold: under the maximum, as on the reference days
        assert found.figures["unanswered_rate"] < 0.3 and not found.centroid.alert


def transactions(rng: np.random.Generator, days: int, per_day: int, shift_last: float = 0.0) -> pa.Table:
    """Silver-like transactions: amounts around 50 and a currency mix, the last day's amounts shifted."""
    newest = datetime(2026, 11, 30, 9, tzinfo=UTC)
    rows = []
    for day in range(days):
        for i in range(per_day):
            last = day == days - 1
            rows.append(
                {
                    "occurred_at": newest - timedelta(days=days - 1 - day, minutes=i),
                    "amount": float(rng.normal(50 + (shift_last if last else 0), 10)),
                    "quantity": int(rng.integers(1, 5)),
                    "currency": str(rng.choice(["USD", "EUR", "GBP"], p=[0.5, 0.3, 0.2])),
                }
            )
    return pa.Table.from_pylist(rows)


COLUMNS = {"amount": "numeric", "quantity": "numeric", "currency": "categorical"}


def test_data_drift_flags_a_shifted_numeric_column_and_not_a_resample():
    same = assess_table(
        transactions(np.random.default_rng(1), 8, 150),
        "occurred_at",
        COLUMNS,
        reference_days=7,
        alpha=0.01,
        psi_max=0.2,
        min_rows=20,
    )
    assert same.judged and not same.alert, same.summary
    assert same.figures["current_rows"] == 150 and same.figures["reference_rows"] == 7 * 150
    shifted = assess_table(
        transactions(np.random.default_rng(1), 8, 150, shift_last=25),
        "occurred_at",
        COLUMNS,
        reference_days=7,
        alpha=0.01,
        psi_max=0.2,
        min_rows=20,
    )
    assert shifted.alert and [n for n, d in shifted.columns.items() if d.alert] == ["amount"], shifted.summary


def _check_job(settings, check, asset: str):
    """A job of one check over its asset as it stands (nothing materialized), with the real resources."""
    defs = Definitions(
        assets=[AssetSpec(asset)],
        asset_checks=[check],
        jobs=[define_asset_job("check", selection=AssetSelection.checks(check))],
        resources=build_resources(settings),
    )
    return defs.resolve_job_def("check")


def _evaluation(ndcg: float, mrr: float, when: datetime, run: str) -> tuple[dict, dict]:
    metrics = {mode: {"mrr": mrr, "ndcg": ndcg, "recall": 0.9} for mode in ("vector", "hybrid")}
    return metrics, {
        "evaluated_at": when,
        "model_id": "all-MiniLM-L6-v2@1",
        "lancedb_table": "chunk_embeddings__m",
        "lancedb_version": 3,
        "gold_sha256": "g",
        "k": 5,
        "queries": 15,
        "mlflow_run_id": run,
    }


def test_evaluation_history_keeps_hit_at_k_and_reads_older_rows_without_it(tmp_path):
    uri = str(tmp_path / "history")
    metrics, run = _evaluation(0.8, 0.7, datetime(2026, 11, 1, tzinfo=UTC), "old")
    old = HISTORY_SCHEMA.remove(HISTORY_SCHEMA.get_field_index("hit"))  # a table written before hit@k
    rows = [{**run, "mode": mode, **m} for mode, m in metrics.items()]
    write_deltalake(uri, pa.Table.from_pylist(rows, schema=old))
    metrics, run = _evaluation(0.8, 0.7, datetime(2026, 11, 2, tzinfo=UTC), "new")
    record_evaluation(uri, {mode: {**m, "hit": 0.95} for mode, m in metrics.items()}, run)
    history = evaluation_history(uri)
    assert [(r["mlflow_run_id"], r["hit"]) for r in history] == [("old", None)] * 2 + [("new", 0.95)] * 2


@pytest.mark.parametrize("severity", ["warn", "block"])
def test_trend_check_fails_on_a_worse_run_and_groundwork_monitor_exits_non_zero(tmp_path, severity):
    settings = make_settings(tmp_path / "home", monitor_trend_severity=severity)
    monitoring = Monitoring.from_settings(settings)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for day, (ndcg, mrr) in enumerate([(0.80, 0.75), (0.79, 0.76)]):  # baseline, then within tolerance
        record_evaluation(
            monitoring.history_uri, *_evaluation(ndcg, mrr, start + timedelta(days=day), f"r{day}")
        )
    job = _check_job(settings, trend_check(settings), "retrieval_evaluation")
    [passed] = job.execute_in_process().get_asset_check_evaluations()
    assert passed.passed and passed.metadata["hybrid_ndcg_change"].value == pytest.approx(-0.01)

    record_evaluation(monitoring.history_uri, *_evaluation(0.70, 0.74, start + timedelta(days=2), "r2"))
    result = job.execute_in_process(raise_on_error=False)
    [failed] = result.get_asset_check_evaluations()
    assert not failed.passed and failed.severity.value == ("ERROR" if severity == "block" else "WARN")
    assert failed.metadata["vector_ndcg_baseline"].value == 0.80
    assert "nDCG@10 0.8000 → 0.7000" in failed.metadata["summary"].value
    report = failed.metadata["report_path"].value
    assert report.startswith(str(settings.home / "monitoring"))
    assert "nDCG@10 0.8000" in Path(report).read_text(encoding="utf-8")
    [row] = latest_results(monitoring.results_uri)
    assert row["alert"] and row["severity"] == severity and row["figures"]["vector_ndcg"] == 0.7
    assert row["figures"]["newest_run"] == "r2"
    if severity == "block":  # a new model's table, active and worse: serving goes back to the baseline's
        db = lancedb.connect(settings.lancedb_uri)
        for name in ("chunk_embeddings__m", "chunk_embeddings__n"):
            db.create_table(name, schema=embeddings_schema(3, name))
            activate(db, settings.embeddings_table, name)
        assert "rows stay active" in failed.metadata["summary"].value  # the same table: nothing to revert
        worse, run = _evaluation(0.60, 0.60, start + timedelta(days=3), "r3")  # a new model's first run
        new_model = {"model_id": "all-MiniLM-L6-v2@2", "lancedb_table": "chunk_embeddings__n"}
        record_evaluation(monitoring.history_uri, worse, {**run, **new_model})
        [blocked] = job.execute_in_process(raise_on_error=False).get_asset_check_evaluations()
        assert not blocked.passed and "moved back" in blocked.metadata["summary"].value
        assert blocked.metadata["baseline_run"].value == "r0"  # the previous champion's baseline
        assert active_table_name(db, settings.embeddings_table) == "chunk_embeddings__m"
    if severity == "warn":  # a rejected run is no baseline: the next run is still compared with r0
        record_evaluation(monitoring.history_uri, *_evaluation(0.71, 0.74, start + timedelta(days=3), "r3"))
        [again] = job.execute_in_process(raise_on_error=False).get_asset_check_evaluations()
        assert not again.passed and again.metadata["baseline_run"].value == "r0"
        # The command line reads the same table, without Dagster or Spark.
        out, imported = run_groundwork(settings.home, "monitor", check=False, COLUMNS="200")
        assert out.returncode == 1 and "evaluation_trend" in out.stdout and "ALERT" in out.stdout
        assert not imported & {"dagster", "pyspark"}


def test_data_drift_check_runs_in_dagster_on_a_silver_table(tmp_path):
    from assets.structured.contracts import load_sources

    settings = make_settings(tmp_path / "home")
    [contract] = [c for c in load_sources(settings.sources_file) if c.name == "transactions"]
    path = f"{settings.delta_uri}/silver_transactions"
    write_deltalake(path, transactions(np.random.default_rng(3), 8, 60, shift_last=25))
    job = _check_job(settings, data_drift_check(contract), "silver_transactions")
    [evaluation] = job.execute_in_process().get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert evaluation.metadata["amount_psi"].value > 0.2 and evaluation.metadata["current_rows"].value == 60
    rows = read_table(Monitoring.from_settings(settings).results_uri).to_pylist()
    assert [(r["check_name"], r["alert"]) for r in rows] == [("silver_transactions_drift", True)]
    out, _ = run_groundwork(settings.home, "monitor", "--json", check=False)
    assert out.returncode == 1 and json.loads(out.stdout)["alerts"] == 1


def test_query_drift_check_runs_in_dagster_on_the_audit_log_under_the_hash_policy(tmp_path):
    """Under the default policy the audit log has no query text: the unanswered rate alone is judged."""
    settings = make_settings(tmp_path / "home")
    log = AuditLog(settings.audit_uri, flush_seconds=0.05)
    now = datetime.now(UTC)
    for i in range(30):  # a day of questions, most under the calibrated threshold
        log.record(
            request_id=str(i),
            at=now - timedelta(minutes=i),
            caller="c",
            endpoint="POST /answer",
            status=200,
            query_sha256="x",
            best_similarity=0.2 if i % 3 else 0.6,
        )
    log.close()
    job = _check_job(settings, query_drift_check, "serving_audit")
    [evaluation] = job.execute_in_process().get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["unanswered_rate"].value == pytest.approx(
        0.6667, abs=1e-3
    )
    assert "centroid not judged" in evaluation.metadata["summary"].value
    assert evaluation.metadata["report"].value.startswith("file://")


def test_embedding_drift_check_runs_in_dagster_on_the_newest_batch_of_the_active_index(tmp_path):
    """The index's chunks of the newest gold version (a batch on another topic) against the older ones."""
    settings = make_settings(tmp_path / "home")
    vectors = np.vstack([embed(tuple(corpus_paragraphs())), embed(tuple(OFF_TOPIC))])
    versions = [1] * len(corpus_paragraphs()) + [2] * len(OFF_TOPIC)
    schema = pa.schema([("vector", pa.list_(pa.float32(), vectors.shape[1])), ("delta_version", pa.int64())])
    db = lancedb.connect(settings.lancedb_uri)
    rows = pa.table({"vector": list(vectors.astype(np.float32)), "delta_version": versions}, schema=schema)
    db.create_table("chunk_embeddings__m", data=rows)
    activate(db, settings.embeddings_table, "chunk_embeddings__m")
    job = _check_job(settings, embedding_drift_check, "chunk_embeddings")
    [evaluation] = job.execute_in_process().get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["batch_delta_version"].value == 2
    assert evaluation.metadata["n_current"].value == len(OFF_TOPIC)
    assert evaluation.metadata["effect"].value > 0.1 and evaluation.metadata["p_value"].value < 0.01
