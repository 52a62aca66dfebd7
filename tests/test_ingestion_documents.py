"""Document ingestion: access groups from sidecars and folders, text in any encoding."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_settings, materialized, run_documents
from pyspark.sql import functions as F
from pyspark.sql import types as T
from test_ingestion import _reasons, _write

from assets.documents.transform import BRONZE_DOCUMENTS_SCHEMA
from resources import build_resources
from resources.lakehouse import read_table, table_version
from resources.settings import SAMPLES_DIR

pytestmark = pytest.mark.slow


def test_documents_carry_access_groups_from_sidecars_and_folders(tmp_path, spark):
    settings = make_settings(tmp_path / "home")
    docs = Path(settings.documents_landing)
    for relative in ["policies/return-policy.md", "hr/parental-leave.md", "faq/gift-cards.md"]:
        _write(docs / relative, (SAMPLES_DIR / "documents" / relative).read_bytes())
    _write(docs / "hr/_access.json", '{"groups": ["hr"]}')
    _write(docs / "faq/gift-cards.md.access.json", '{"groups": ["sales", "support"]}')
    first = materialized(run_documents(settings))
    gold = read_table(f"{settings.delta_uri}/document_chunks").to_pandas()
    groups = {p: sorted(g) for p, g in zip(gold.path, gold.access_groups, strict=True)}
    assert groups == {
        "policies/return-policy.md": ["public"],
        "hr/parental-leave.md": ["hr"],
        "faq/gift-cards.md": ["sales", "support"],
    }
    assert first["bronze_documents"]["files_added"] == 3  # rule files are not documents
    # An access change alone re-indexes that document; a broken rule quarantines, never publishes.
    _write(docs / "hr/_access.json", '{"groups": ["hr", "managers"]}')
    _write(docs / "faq/gift-cards.md.access.json", "{not json")
    second = materialized(run_documents(settings))
    assert second["document_chunks"]["documents_rechunked"] == 1
    db = build_resources(settings)["lancedb"].connect()
    from resources.lancedb.tables import open_active

    indexed = open_active(db, settings.embeddings_table).to_pandas()
    assert {tuple(sorted(g)) for g in indexed[indexed.path.str.startswith("hr/")].access_groups} == {
        ("hr", "managers")
    }
    assert "faq/gift-cards.md" not in set(indexed.path)
    reasons = _reasons(settings, "documents")
    assert reasons["faq/gift-cards.md"][0].startswith("unreadable access rule faq/gift-cards.md.access.json")


def test_documents_in_any_encoding_flow_downstream_through_the_change_data_feed(small_home, spark):
    settings = small_home
    lakehouse = build_resources(settings)["lakehouse"]
    # A bronze table from before the encoding column: the first append must merge the column in.
    before_encoding = T.StructType([f for f in BRONZE_DOCUMENTS_SCHEMA.fields if f.name != "encoding"])
    lakehouse.append(
        spark.createDataFrame([], before_encoding).withColumns(
            {"ingested_at": F.current_timestamp(), "run_id": F.lit("")}
        ),
        "bronze_documents",
    )
    german = "Die Kühlkette gilt für alle Lieferungen über 30 kg; Rückfragen an die Qualitätsprüfung."
    french = "# Délai\n\nLivrée à l'étranger en trois à cinq jours."
    quotes = "\u201cDon\u2019t\u201d \u2014 rated to \u201310 \u00b0C"
    odd = {  # path: (bytes, the encoding bronze records)
        "notes/kühlkette.txt": (german.encode("latin-1"), "cp1252"),
        "notes/expédition.md": (french.encode("latin-1"), "cp1252"),
        "notes/quotes.txt": (quotes.encode("cp1252"), "cp1252"),
        "notes/grüße.md": ("\ufeff# Grüße\n\nAus Zürich.".encode("utf-16-le"), "utf-16-le"),
        "notes/scan.txt": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8, None),
    }
    for relative, (content, _) in odd.items():
        _write(Path(settings.documents_landing) / relative, content)
    silver_run = materialized(run_documents(settings))["silver_documents"]
    assert (silver_run["documents_accepted"], silver_run["documents_quarantined"]) == (7, 1)
    bronze = read_table(f"{settings.delta_uri}/bronze_documents", ["path", "encoding"]).to_pylist()
    assert {r["path"]: r["encoding"] for r in bronze} == {p: e for p, (_, e) in odd.items()} | dict.fromkeys(
        ["policies/return-policy.md", "policies/shipping-policy.md", "faq/gift-cards.md"], "utf-8"
    )
    silver = read_table(f"{settings.delta_uri}/silver_documents", ["path", "text"]).to_pylist()
    texts = {r["path"]: r["text"] for r in silver}
    assert (texts["notes/kühlkette.txt"], texts["notes/quotes.txt"]) == (german, quotes)
    assert (texts["notes/expédition.md"], texts["notes/grüße.md"]) == (french, "# Grüße\n\nAus Zürich.")
    reasons = _reasons(settings, "documents")
    assert reasons == {"notes/scan.txt": ["binary content: not text in any known encoding"]}
    silver_version = table_version(f"{settings.delta_uri}/silver_documents")
    gold_version = table_version(f"{settings.delta_uri}/document_chunks")
    idle = materialized(run_documents(settings))
    assert table_version(f"{settings.delta_uri}/silver_documents") == silver_version
    assert table_version(f"{settings.delta_uri}/document_chunks") == gold_version
    assert idle["document_chunks"]["documents_rechunked"] == 0
    path = Path(settings.documents_landing) / "policies/shipping-policy.md"
    path.write_text(path.read_text() + "\n\nNew: free shipping on orders over $20 during December.\n")
    changed = materialized(run_documents(settings))
    assert changed["bronze_documents"]["files_added"] == 1  # rewritten in place, seen by the listing
    assert changed["document_chunks"]["documents_rechunked"] == 1
    assert 0 < changed["chunk_embeddings"]["chunks_embedded"] <= changed["document_chunks"]["chunks_written"]
