"""Quality gates: the suites catch bad batches, results persist, and a failing gate stops the embedding."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import PipelineRuns, materialized, run_documents
from pyspark.sql import functions as F

from assets.structured.contracts import load_sources
from quality import suites
from quality.checks import RESULTS_TABLE
from quality.validation import validate
from resources import build_resources
from resources.lakehouse import read_table
from resources.lancedb.tables import open_active
from resources.settings import DEFAULT_SOURCES_FILE


def test_chunk_suite_flags_duplicates_oversized_chunks_and_pii(spark, tmp_path):
    rows = [
        ("c1", "d1", "text", 10),
        ("c1", "d1", "more text", 12),
        ("c2", "d1", "x", 400),
        ("c3", "d1", "mail jo@example.com", 5),
    ]
    df = spark.createDataFrame(rows, "chunk_id string, document_id string, text string, token_count int")
    outcome = validate(df, "document_chunks", suites.document_chunks_suite(), str(tmp_path / "gx"))
    assert not outcome.success
    failed = {(o.expectation, o.column) for o in outcome.failed}
    assert failed == {
        ("expect_column_values_to_be_unique", "chunk_id"),
        ("expect_column_values_to_be_between", "token_count"),
        ("expect_column_values_to_not_match_regex", "text"),
    }
    assert outcome.docs_url and Path(outcome.docs_url.removeprefix("file://")).exists()


def test_chunk_suite_passes_clean_chunks(spark, tmp_path):
    df = spark.createDataFrame(
        [("c1", "d1", "text", 10)], "chunk_id string, document_id string, text string, token_count int"
    )
    assert validate(df, "document_chunks", suites.document_chunks_suite(), str(tmp_path / "gx")).success


def test_silver_suite_enforces_contract_references_and_freshness(spark, tmp_path):
    contract = next(s for s in load_sources(DEFAULT_SOURCES_FILE) if s.name == "transactions")
    contract = contract.model_copy(update={"freshness_days": 30})
    rows = [
        ("T1", "C1", "SKU1", 2, 10.0, "USD", datetime(2024, 1, 1)),
        ("T1", "C9", "SKU1", 0, 10.0, "JPY", datetime(2024, 1, 2)),
    ]
    schema = (
        "transaction_id string, customer_id string, product_sku string, quantity int, amount double, "
        "currency string, occurred_at timestamp"
    )
    df = spark.createDataFrame(rows, schema)
    expectations = suites.silver_source_suite(
        contract, {"customers": ["C1"], "products": ["SKU1"]}, now=datetime(2024, 6, 1, tzinfo=UTC)
    )
    outcome = validate(df, "silver_transactions", expectations, str(tmp_path / "gx"))
    failed = {(o.expectation, o.column) for o in outcome.failed}
    assert failed == {
        ("expect_column_values_to_be_unique", "transaction_id"),
        ("expect_column_values_to_be_between", "quantity"),
        ("expect_column_values_to_be_in_set", "currency"),
        ("expect_column_values_to_be_in_set", "customer_id"),
        ("expect_column_max_to_be_between", "occurred_at"),
    }


def test_every_layer_is_gated_and_results_persist(sample_pipeline: PipelineRuns):
    settings = sample_pipeline.settings
    results = read_table(f"{settings.delta_uri}/{RESULTS_TABLE}").to_pandas()
    assert set(results.suite) >= {
        "bronze_documents",
        "silver_documents",
        "document_chunks",
        "chunk_embeddings",
        "bronze_customers",
        "silver_customers",
        "silver_transactions",
    }
    assert results.success.all(), results[~results.success][["suite", "expectation", "observed_value"]]
    # The fixture's second run found every table unchanged: its checks passed again and recorded nothing
    # new, so each table version's outcome is in the table once, from the first run.
    assert (results.groupby(["table_name", "table_version"]).run_id.nunique() == 1).all()
    assert results.run_id.nunique() == 1
    assert (settings.gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()


@pytest.mark.slow
def test_a_bad_batch_blocks_the_embedding_and_the_index_keeps_its_version(small_home, spark):
    settings = small_home
    first = materialized(run_documents(settings))
    table = open_active(build_resources(settings)["lancedb"].connect(), settings.embeddings_table)
    version_before, rows_before = table.version, table.count_rows()
    assert first["chunk_embeddings"]["dagster/row_count"] == rows_before > 0

    # A faulty writer slips a second row with an existing document id into silver.
    silver_path = f"{settings.delta_uri}/silver_documents"
    spark.read.format("delta").load(silver_path).limit(1).withColumn(
        "title", F.lit("Forged copy")
    ).write.format("delta").mode("append").save(silver_path)
    (settings.home / "landing/documents/policies/new-policy.md").write_text(
        "# New policy\n\nBikes may be rented."
    )
    result = run_documents(settings, raise_on_error=False)

    assert not result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    checks = {name: e.passed for name, e in evaluations.items()}
    assert checks["silver_documents_expectations"] is False
    docs = evaluations["silver_documents_expectations"].metadata["data_docs"].value
    assert docs.startswith(f"file://{settings.gx_root}") and docs.endswith("index.html")
    assert "expect_column_values_to_be_unique(document_id)" in str(
        evaluations["silver_documents_expectations"].metadata["failed"].value
    )
    assert checks["bronze_documents_expectations"] is True
    second = materialized(result)
    assert "silver_documents" in second
    assert "document_chunks" not in second and "chunk_embeddings" not in second
    table.checkout_latest()
    assert (table.version, table.count_rows()) == (version_before, rows_before)
    failed = read_table(f"{settings.delta_uri}/{RESULTS_TABLE}").to_pandas().query("not success")
    assert set(zip(failed.suite, failed.expectation, failed.column, strict=True)) == {
        ("silver_documents", "expect_column_values_to_be_unique", "document_id"),
        ("silver_documents", "expect_column_values_to_be_unique", "path"),
        ("silver_documents", "expect_column_values_to_be_unique", "sha256"),
    }


def test_a_check_reuses_only_a_passing_verdict_on_the_same_version_and_suite(tmp_path):
    """The verdict of a deterministic suite on one table version cannot change: it is reused; a failed one,
    another version, or a suite whose arguments moved (freshness against now) is validated again."""
    from quality.checks import passed_before, persist_results, suite_fingerprint
    from quality.validation import ExpectationOutcome, SuiteOutcome
    from resources.lakehouse import Lakehouse

    contract = next(s for s in load_sources(DEFAULT_SOURCES_FILE) if s.name == "transactions")
    contract = contract.model_copy(update={"freshness_days": 30})
    monday = suites.silver_source_suite(contract, {}, now=datetime(2024, 6, 3, tzinfo=UTC))
    tuesday = suites.silver_source_suite(contract, {}, now=datetime(2024, 6, 4, tzinfo=UTC))
    assert suite_fingerprint(monday) == suite_fingerprint(
        suites.silver_source_suite(contract, {}, now=datetime(2024, 6, 3, tzinfo=UTC))
    )
    assert suite_fingerprint(monday) != suite_fingerprint(tuesday)

    lakehouse = Lakehouse(landing_uri=str(tmp_path), delta_uri=str(tmp_path / "delta"), checkpoint_uri="")
    fingerprint = suite_fingerprint(monday)

    def outcome(*successes: bool) -> SuiteOutcome:
        results = [ExpectationOutcome(f"e{i}", "c", ok, None) for i, ok in enumerate(successes)]
        return SuiteOutcome("silver_transactions", all(successes), results)

    assert passed_before(lakehouse, "silver_transactions", 3, fingerprint, 2) is None  # nothing recorded
    persist_results(lakehouse, outcome(True, False), "silver_transactions", 3, "run-a", fingerprint)
    assert passed_before(lakehouse, "silver_transactions", 3, fingerprint, 2) is None  # it failed
    persist_results(lakehouse, outcome(True, True), "silver_transactions", 4, "run-b", fingerprint)
    assert passed_before(lakehouse, "silver_transactions", 4, fingerprint, 2) == "run-b"
    assert passed_before(lakehouse, "silver_transactions", 5, fingerprint, 2) is None  # a new version
    assert passed_before(lakehouse, "silver_transactions", 4, suite_fingerprint(tuesday), 2) is None
    assert passed_before(lakehouse, "silver_customers", 4, fingerprint, 2) is None
