"""Quality gates: the suites catch bad batches, and a failing blocking check stops the embedding."""

from __future__ import annotations

import great_expectations.expectations as gxe
import pytest
from conftest import materialized, run_all

from quality import suites
from quality.validation import validate
from resources import build_resources


def test_chunk_suite_flags_duplicates_and_oversized_chunks(spark):
    rows = [("c1", "d1", "text", 10), ("c1", "d1", "more text", 12), ("c2", "d1", "x", 400)]
    df = spark.createDataFrame(rows, "chunk_id string, document_id string, text string, token_count int")
    outcome = validate(df, "document_chunks", suites.document_chunks_suite())
    assert not outcome.success
    failed = {(o.expectation, o.column) for o in outcome.failed}
    assert failed == {
        ("expect_column_values_to_be_unique", "chunk_id"),
        ("expect_column_values_to_be_between", "token_count"),
    }


def test_chunk_suite_passes_clean_chunks(spark):
    df = spark.createDataFrame(
        [("c1", "d1", "text", 10)], "chunk_id string, document_id string, text string, token_count int"
    )
    assert validate(df, "document_chunks", suites.document_chunks_suite()).success


@pytest.mark.slow
def test_failing_blocking_check_keeps_the_index_at_its_version(small_home, monkeypatch):
    settings = small_home
    first = materialized(run_all(settings))
    table = build_resources(settings)["lancedb"].connect().open_table(settings.embeddings_table)
    version_before = table.version
    assert first["chunk_embeddings"]["dagster/row_count"] > 0

    # A contract that the current gold batch breaks: every chunk must be under 5 tokens.
    strict = [gxe.ExpectColumnValuesToBeBetween(column="token_count", min_value=1, max_value=5)]
    monkeypatch.setitem(suites.SUITES, "document_chunks", lambda: strict)
    (settings.home / "landing/documents/policies/new-policy.md").write_text(
        "# New policy\n\nBikes may be rented."
    )
    result = run_all(settings, raise_on_error=False)
    assert not result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"silver_documents_expectations": True, "document_chunks_expectations": False}
    second = materialized(result)
    assert "document_chunks" in second and "chunk_embeddings" not in second
    table.checkout_latest()
    assert table.version == version_before
