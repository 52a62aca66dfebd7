"""Small increments of documents applied in-process (delta-rs and pandas) give what Spark gives.

`silver_documents` and `document_chunks` apply an increment of up to `small_increment_max_rows` upstream
changes without Spark, so a document event is searchable in seconds. The same landings run through a
home that applies everything on Spark (`small_increment_max_rows=0`) must leave the same silver rows,
chunks, quarantine, reconciliations and index, batch after batch: first documents, a duplicate copy, an
unreadable file, then an edit, a deletion, an access change and a copy of a live document.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import make_settings, materialized, run_documents
from test_ingestion import _write

from resources import build_resources
from resources.lakehouse import Lakehouse, read_table
from resources.lancedb.tables import open_active
from resources.settings import SAMPLES_DIR, Settings

pytestmark = pytest.mark.slow

FIRST = [
    "policies/return-policy.md",
    "policies/shipping-policy.md",
    "faq/gift-cards.md",
    "hr/parental-leave.md",
]


def _at(seconds: int, *paths: Path) -> None:
    """The same modification time in both homes: silver keeps each file's."""
    for path in paths:
        os.utime(path, (seconds, seconds))


def _land_first(settings: Settings) -> None:
    docs = Path(settings.documents_landing)
    for relative in FIRST:
        _write(docs / relative, (SAMPLES_DIR / "documents" / relative).read_bytes())
    _write(docs / "copies/gift-cards-copy.md", (SAMPLES_DIR / "documents/faq/gift-cards.md").read_bytes())
    _write(docs / "notes/scan.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    _write(docs / "notes/blank.md", "\n\n   \n")
    _at(1_700_000_000, *(p for p in docs.rglob("*") if p.is_file()))


def _land_second(settings: Settings) -> None:
    docs = Path(settings.documents_landing)
    edited = docs / "policies/shipping-policy.md"
    edited.write_text(edited.read_text() + "\n\nNew: free shipping on orders over $20 in December.\n")
    (docs / "policies/return-policy.md").unlink()
    _write(docs / "hr/_access.json", '{"groups": ["hr", "managers"]}')
    _write(docs / "copies/leave-copy.md", (SAMPLES_DIR / "documents/hr/parental-leave.md").read_bytes())
    _at(1_700_000_100, edited, docs / "hr/_access.json", docs / "copies/leave-copy.md")


def _rows(lakehouse: Lakehouse, name: str, key: list[str], drop: set[str]) -> list[dict]:
    table = lakehouse.read_arrow(name)
    table = table.select([c for c in table.column_names if c not in drop])
    return sorted(table.to_pylist(), key=lambda r: tuple(str(r[k]) for k in key))


def _state(settings: Settings) -> dict:
    """Everything a batch leaves behind, without what differs by nature (timestamps, run ids)."""
    lakehouse = build_resources(settings)["lakehouse"]
    quarantine = {
        layer: _rows(
            lakehouse, f"quarantine_{layer}", ["source_file", "reason"], {"run_id", "quarantined_at"}
        )
        if lakehouse.exists(f"quarantine_{layer}")
        else []
        for layer in ("bronze", "silver", "gold")
    }
    runs = read_table(f"{settings.delta_uri}/ingestion_runs").to_pandas().sort_values("recorded_at")
    index = open_active(build_resources(settings)["lancedb"].connect(), settings.embeddings_table)
    return {
        "silver": _rows(lakehouse, "silver_documents", ["document_id"], {"ingested_at"}),
        "gold": _rows(lakehouse, "document_chunks", ["chunk_id"], {"chunked_at"}),
        "quarantine": quarantine,
        "runs": runs[["landed", "accepted", "quarantined", "duplicates", "deleted"]].to_dict("records"),
        "index": sorted(index.to_pandas()[["chunk_id", "path"]].itertuples(index=False, name=None)),
    }


def _batch_metadata(result) -> dict:
    meta = materialized(result)
    return {
        "silver": {k: v for k, v in meta["silver_documents"].items() if k.startswith("documents_")},
        "gold": {
            k: meta["document_chunks"][k]
            for k in (
                "documents_rechunked",
                "chunks_written",
                "chunks_removed",
                "max_token_count",
                "pii_redacted",
            )
        },
        "applied_by": (meta["silver_documents"]["applied_by"], meta["document_chunks"]["applied_by"]),
    }


def test_small_increments_in_process_leave_what_spark_leaves(tmp_path, spark):
    in_process = make_settings(tmp_path / "in-process")
    on_spark = make_settings(tmp_path / "spark", small_increment_max_rows=0)
    states, batches = {}, {}
    for name, settings in {"in-process": in_process, "spark": on_spark}.items():
        _land_first(settings)
        first = _batch_metadata(run_documents(settings))
        after_first = _state(settings)
        _land_second(settings)
        second = _batch_metadata(run_documents(settings))
        states[name] = (after_first, _state(settings))
        batches[name] = (first, second)

    assert [b["applied_by"] for b in batches["in-process"]] == [("in-process", "in-process")] * 2
    assert [b["applied_by"] for b in batches["spark"]] == [("spark", "spark")] * 2
    for b in batches.values():
        for batch in b:
            del batch["applied_by"]
    assert batches["in-process"] == batches["spark"]
    for batch, (after_in_process, after_spark) in enumerate(zip(*states.values(), strict=True), 1):
        for part in after_spark:
            mine, theirs = after_in_process[part], after_spark[part]
            differ = [
                {k: (a.get(k), b.get(k)) for k in a if a.get(k) != b.get(k)}
                for a, b in zip(mine, theirs, strict=False)
                if isinstance(a, dict) and a != b
            ]
            assert mine == theirs, f"batch {batch}, {part}: first difference {differ[:1]}"

    first, second = states["in-process"]
    reasons = {
        layer: {r["source_file"]: r["reason"] for r in rows} for layer, rows in second["quarantine"].items()
    }
    # What the scenario exercises, so that the comparison above is not between two empty tables.
    assert "notes/scan.txt" in reasons["bronze"]
    assert reasons["bronze"]["notes/blank.md"] == "no text content (only whitespace or markup)"
    assert reasons["silver"]["copies/gift-cards-copy.md"] == "duplicate: same content as faq/gift-cards.md"
    assert reasons["silver"]["copies/leave-copy.md"] == "duplicate: same content as hr/parental-leave.md"
    assert {r["path"] for r in first["silver"]} >= set(FIRST)
    assert "policies/return-policy.md" not in {r["path"] for r in second["silver"]}
    assert "policies/return-policy.md" not in {path for _, path in second["index"]}
    leave = {tuple(r["access_groups"]) for r in second["gold"] if r["path"] == "hr/parental-leave.md"}
    assert leave == {("hr", "managers")}
    assert any("December" in r["text"] for r in second["gold"] if r["path"] == "policies/shipping-policy.md")


def test_a_replayed_small_increment_writes_nothing_twice(tmp_path):
    lakehouse = Lakehouse(
        landing_uri=str(tmp_path / "landing"),
        delta_uri=str(tmp_path / "delta"),
        checkpoint_uri=str(tmp_path / "c"),
    )
    rows = pa.table({"id": ["a", "b"], "v": [1, 2], "_delete": [False, False]})
    first = lakehouse.merge_arrow(rows, "t", ["id"], txn=("t<-u", 3))
    update = pa.table({"id": ["a", "b"], "v": [10, 2], "_delete": [False, True]})
    second = lakehouse.merge_arrow(
        update, "t", ["id"], changed_when="s.v IS DISTINCT FROM t.v", txn=("t<-u", 4)
    )
    assert second == first + 1
    assert lakehouse.read_arrow("t").to_pylist() == [{"id": "a", "v": 10}]
    # The same increment again (a step retried after its commit) and an older one are both no-ops.
    assert lakehouse.merge_arrow(update, "t", ["id"], txn=("t<-u", 4)) == second
    assert lakehouse.merge_arrow(rows, "t", ["id"], txn=("t<-u", 3)) == second
    assert lakehouse.transaction_version("t", "t<-u") == 4
    changes = lakehouse.changes_arrow("t", first, max_rows=10)
    assert sorted(zip(changes["id"].to_pylist(), changes["_change_type"].to_pylist(), strict=True)) == [
        ("a", "update_postimage"),
        ("a", "update_preimage"),
        ("b", "delete"),
    ]
    assert lakehouse.changes_arrow("t", first, max_rows=2) is None  # three changes: Spark's increment


def test_an_empty_landing_zone_leaves_empty_documents_tables(tmp_path, spark):
    """A home with no documents yet (structured sources only): the documents' chain still succeeds."""
    settings = make_settings(tmp_path / "home")
    Path(settings.documents_landing).mkdir(parents=True)
    first = materialized(run_documents(settings))
    assert (first["silver_documents"]["applied_by"], first["document_chunks"]["applied_by"]) == (
        "in-process",
    ) * 2
    lakehouse = build_resources(settings)["lakehouse"]
    assert lakehouse.row_count("silver_documents") == lakehouse.row_count("document_chunks") == 0
    again = materialized(run_documents(settings))
    assert (again["silver_documents"]["applied_by"], again["document_chunks"]["applied_by"]) == (
        "nothing new",
    ) * 2
