"""End to end on the bundled samples: landing → bronze → silver → gold → LanceDB, with real engines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import PipelineRuns, materialized, run_documents

from assets.landing import is_landed_file
from assets.quarantine import last_ingestion_runs, read_quarantine
from resources import build_resources
from resources.lakehouse import read_table, table_version
from resources.lancedb.tables import open_active
from resources.settings import SAMPLES_DIR
from serving.champion import champion_searcher
from serving.search import Searcher

pytestmark = pytest.mark.slow

SAMPLE_DOCUMENT_FILES = sum(
    1
    for p in (SAMPLES_DIR / "documents").rglob("*")
    if p.is_file() and is_landed_file(p.relative_to(SAMPLES_DIR / "documents").as_posix())
)
EXPECTED_QUESTIONS = [
    json.loads(line) for line in (SAMPLES_DIR / "gold/questions.jsonl").read_text().splitlines()
][:3]


def _lancedb_table(settings):
    resources = build_resources(settings)
    return open_active(resources["lancedb"].connect(), settings.embeddings_table)


def test_every_landed_document_is_accepted_or_quarantined(sample_pipeline: PipelineRuns):
    first = sample_pipeline.first
    assert first["bronze_documents"]["files_added"] == SAMPLE_DOCUMENT_FILES
    silver = first["silver_documents"]
    assert silver["documents_landed"] == SAMPLE_DOCUMENT_FILES
    assert (
        silver["documents_accepted"] + silver["documents_quarantined"] + silver["documents_duplicates"]
        == SAMPLE_DOCUMENT_FILES
    )
    quarantine = read_quarantine(build_resources(sample_pipeline.settings)["lakehouse"])
    documents = quarantine[quarantine.source == "documents"]
    reasons = dict(zip(documents.source_file, documents.reason, strict=True))
    assert reasons["misc/empty.txt"] == "empty file (0 bytes)"
    assert "unreadable PDF" in reasons["manuals/corrupt-manual.pdf"]
    assert reasons["policies/return-policy-copy.md"] == "duplicate: same content as policies/return-policy.md"
    silver_paths = set(
        read_table(f"{sample_pipeline.settings.delta_uri}/silver_documents", ["path"])["path"].to_pylist()
    )
    assert "faq/Größentabelle und Passform.md" in silver_paths
    assert "misc/latin1-notes.txt" in silver_paths  # Latin-1, decoded by detection
    assert not silver_paths & set(reasons)


def test_structured_sources_reconcile(sample_pipeline: PipelineRuns):
    customers = sample_pipeline.first["silver_customers"]
    assert customers["records_landed"] == 65
    assert (
        customers["records_accepted"],
        customers["records_quarantined"],
        customers["records_duplicates"],
    ) == (60, 3, 2)
    transactions = sample_pipeline.first["silver_transactions"]
    assert (transactions["records_quarantined"], transactions["records_duplicates"]) == (3, 1)
    quarantine = read_quarantine(build_resources(sample_pipeline.settings)["lakehouse"])
    reasons = set(quarantine[quarantine.source == "transactions"].reason)
    assert "column 'customer_id': C9999 not found in customers.customer_id" in reasons
    tickets = quarantine[quarantine.source == "support_tickets"].reason.tolist()
    assert tickets == ["column 'priority': critical-ish is not one of low, normal, high, urgent"]
    assert (
        transactions["records_landed"]
        == transactions["records_accepted"]
        + transactions["records_quarantined"]
        + transactions["records_duplicates"]
    )
    runs = {
        r["source"]: r for r in last_ingestion_runs(build_resources(sample_pipeline.settings)["lakehouse"])
    }
    assert set(runs) == {"documents", "customers", "transactions", "support_tickets", "products"}
    assert all(r["landed"] > 0 for r in runs.values()), "the latest recorded runs are the first run's"
    # The second run had nothing new: it reports zero landed and commits no reconciliation row.
    assert all(
        sample_pipeline.second[f"silver_{source}"]["records_landed"] == 0
        for source in ("customers", "transactions", "support_tickets", "products")
    )
    assert sample_pipeline.second["silver_documents"]["documents_landed"] == 0
    # The samples' documents are a small increment, applied in-process; a run with nothing new applies
    # nothing and does not import torch to name a device it did not use.
    assert sample_pipeline.first["silver_documents"]["applied_by"] == "in-process"
    assert sample_pipeline.second["document_chunks"]["applied_by"] == "nothing new"
    assert sample_pipeline.first["chunk_embeddings"]["device"] in ("cpu", "cuda")
    assert sample_pipeline.second["chunk_embeddings"]["device"] == "none: nothing embedded"
    silver = (
        read_table(f"{sample_pipeline.settings.delta_uri}/silver_customers")
        .to_pandas()
        .set_index("customer_id")
    )
    assert silver.index.is_unique
    assert silver.loc["C0023", "segment"] == "loyalty"  # the later update won
    assert str(silver["signup_date"].dtype) != "object" or silver["signup_date"].map(type).nunique() == 1


def test_materializations_record_counts_versions_paths_and_schema(sample_pipeline: PipelineRuns):
    for name in [
        "bronze_documents",
        "silver_documents",
        "document_chunks",
        "silver_customers",
        "bronze_products",
    ]:
        meta, latest = sample_pipeline.first[name], sample_pipeline.second[name]
        assert meta["table_path"] == f"{sample_pipeline.settings.delta_uri}/{name}"
        assert latest["delta_version"] == table_version(meta["table_path"])
        assert 0 <= meta["delta_version"] <= latest["delta_version"]
        assert meta["dagster/row_count"] > 0
        assert {c.name for c in meta["dagster/column_schema"].columns} >= (
            {"path"} if "documents" in name else set()
        )


def test_lancedb_holds_one_row_per_gold_chunk(sample_pipeline: PipelineRuns):
    settings = sample_pipeline.settings
    gold = read_table(f"{settings.delta_uri}/document_chunks").to_pandas()
    table = _lancedb_table(settings)
    indexed = table.to_pandas()
    assert len(indexed) == len(gold) == sample_pipeline.first["chunk_embeddings"]["chunks_embedded"]
    assert set(indexed.chunk_id) == set(gold.chunk_id)
    assert indexed.chunk_id.is_unique
    assert gold.token_count.max() <= 200
    assert len(indexed.vector.iloc[0]) == 384
    assert (indexed.model_name == sample_pipeline.settings.embedding_registered_model).all()
    assert (
        indexed.model_version == sample_pipeline.first["chunk_embeddings"]["model_registry_version"]
    ).all()


@pytest.mark.parametrize("question", EXPECTED_QUESTIONS, ids=lambda q: q["relevant"][0])
@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_sample_questions_find_their_document_in_top_3(sample_pipeline: PipelineRuns, question, mode):
    searcher = champion_searcher(sample_pipeline.settings)
    hits = searcher.search(question["query"], k=3, mode=mode)
    assert {h.path for h in hits} & set(question["relevant"]), [h.path for h in hits]


def test_second_run_embeds_nothing_and_changes_no_count(sample_pipeline: PipelineRuns):
    first, second = sample_pipeline.first, sample_pipeline.second
    assert second["chunk_embeddings"]["chunks_embedded"] == 0
    assert second["chunk_embeddings"]["chunks_deleted"] == 0
    assert second["bronze_documents"]["files_added"] == 0
    for name, meta in first.items():
        assert second[name].get("dagster/row_count") == meta.get("dagster/row_count"), name
        if "delta_version" in meta and not name.startswith("bronze_"):
            assert second[name]["delta_version"] == meta["delta_version"], f"{name}: no empty commit"
    assert second["chunk_embeddings"]["lancedb_version"] == first["chunk_embeddings"]["lancedb_version"]


def test_new_changed_and_deleted_documents_flow_through(small_home):
    """Only new or changed content is embedded; a removed document leaves silver, gold and LanceDB."""
    settings = small_home
    first = materialized(run_documents(settings))
    total = first["chunk_embeddings"]["dagster/row_count"]
    assert first["chunk_embeddings"]["chunks_embedded"] == total > 0

    docs = Path(settings.documents_landing)
    shutil.copyfile(
        SAMPLES_DIR / "documents/policies/warranty-policy.md", docs / "policies/warranty-policy.md"
    )
    (docs / "faq/gift-cards.md").unlink()
    second = materialized(run_documents(settings))

    gold = read_table(f"{settings.delta_uri}/document_chunks").to_pandas()
    indexed = _lancedb_table(settings).to_pandas()
    assert set(indexed.chunk_id) == set(gold.chunk_id)
    assert "faq/gift-cards.md" not in set(gold.path) | set(indexed.path)
    new_chunks = (gold.path == "policies/warranty-policy.md").sum()
    assert second["chunk_embeddings"]["chunks_embedded"] == new_chunks > 0
    assert second["chunk_embeddings"]["chunks_deleted"] > 0
    assert second["bronze_documents"]["files_added"] == 1
    assert second["bronze_documents"]["files_removed"] == 1
    silver = read_table(f"{settings.delta_uri}/silver_documents").to_pandas()
    assert sorted(silver.path) == [
        "policies/return-policy.md",
        "policies/shipping-policy.md",
        "policies/warranty-policy.md",
    ]


def test_queries_with_another_model_are_refused(sample_pipeline: PipelineRuns):
    from resources import EmbedderResource
    from serving.search import ModelMismatchError

    db = build_resources(sample_pipeline.settings)["lancedb"].connect()
    with pytest.raises(ModelMismatchError, match="was built with groundwork-embedder@1"):
        Searcher(db, sample_pipeline.settings.embeddings_table, EmbedderResource(model_version="9.9.9"))


def test_every_chunk_traces_to_its_source_file_and_delta_version(sample_pipeline: PipelineRuns):
    from deltalake import DeltaTable

    settings = sample_pipeline.settings
    indexed = _lancedb_table(settings).to_pandas().set_index("chunk_id")
    gold = read_table(f"{settings.delta_uri}/document_chunks").to_pandas().set_index("chunk_id")
    row = indexed.loc[indexed.path == "manuals/ridgeline-2p-tent-manual.md"].iloc[3]
    chunk = gold.loc[row.name]
    silver_then = DeltaTable(f"{settings.delta_uri}/silver_documents", version=int(chunk.silver_version))
    source = silver_then.to_pandas().set_index("document_id").loc[chunk.document_id]
    assert source.path == row.path == chunk.path
    assert row.text in source.text
    assert row.delta_version <= table_version(f"{settings.delta_uri}/document_chunks")
    lineage = sample_pipeline.first["document_chunks"]["dagster/column_lineage"]
    assert [d.asset_key.to_user_string() for d in lineage.deps_by_column["text"]] == ["silver_documents"]
    customers = sample_pipeline.first["silver_customers"]["dagster/column_lineage"]
    assert customers.deps_by_column["email"][0].column_name == "record"


def test_pii_is_redacted_before_gold_and_the_index(sample_pipeline: PipelineRuns):
    settings = sample_pipeline.settings
    silver = read_table(f"{settings.delta_uri}/silver_documents").to_pandas()
    emails_in_silver = silver.text.str.contains(r"[\w.+-]+@[\w-]+\.[\w.]+", regex=True).sum()
    assert emails_in_silver > 0
    indexed = _lancedb_table(settings).to_pandas()
    assert not indexed.text.str.contains(r"[\w.+-]+@[\w-]+\.[\w.]+", regex=True).any()
    assert indexed.text.str.contains("[EMAIL]", regex=False).any()
    assert sample_pipeline.first["document_chunks"]["pii_redacted_email"] >= emails_in_silver


def test_structured_pii_is_tokenised_or_redacted_in_silver(sample_pipeline: PipelineRuns):
    settings = sample_pipeline.settings
    customers = read_table(f"{settings.delta_uri}/silver_customers").to_pandas()
    for column in ("email", "phone"):
        values = customers[column].dropna()
        assert len(values) > 50 and values.str.fullmatch(r"tok_[0-9a-f]{32}").all()
    assert customers.email.dropna().is_unique
    key_file = settings.home / "secrets" / "pii.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    tickets = read_table(f"{settings.delta_uri}/silver_support_tickets").to_pandas().set_index("ticket_id")
    body = tickets.loc["TK-1031", "body"]
    assert "[EMAIL]" in body and "[PHONE]" in body
    assert "yuki.sato.home@example.net" not in body and "555-0187" not in body
