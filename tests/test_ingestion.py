"""Ingestion into Delta with the real engines: streaming pickup exactly once, bad input quarantined with
a reason, counts that reconcile, schema drift, tombstones, access groups, backfills by ingest date."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_settings, materialized, run_all
from pyspark.sql import functions as F
from pyspark.sql import types as T

from assets.documents.transform import BRONZE_DOCUMENTS_SCHEMA
from assets.landing import stream_landed_files
from assets.quarantine import last_ingestion_runs, read_quarantine
from assets.structured.assets import current_ingest_day, ingest_new_files
from assets.structured.contracts import load_sources
from resources import build_resources
from resources.lakehouse import read_table, table_version
from resources.settings import PROJECT_ROOT, SAMPLES_DIR
from resources.spark import get_spark

pytestmark = pytest.mark.slow

CUSTOMER_HEADER = "customer_id,name,email,phone,country,segment,signup_date,updated_at"
GOOD_CUSTOMERS = [
    f"C1{i:03d},Customer {i},c{i}@example.com,,US,pro,2024-01-0{1 + i % 9},2024-02-01T10:00:00"
    for i in range(20)
]
STRUCTURED = ["customers", "products", "transactions"]


def _structured_selection(settings):
    return [f"{layer}_{s}" for s in STRUCTURED for layer in ("bronze", "silver")]


def _run(settings, **kwargs):
    return run_all(settings, selection=_structured_selection(settings), **kwargs)


def _write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _customer(key: str, name: str, signup: str = "2024-01-01", updated: str = "2024-02-01T10:00:00") -> str:
    return f"{key},{name},{key.lower()}@example.com,,US,pro,{signup},{updated}"


def _transaction(key: str, customer: str) -> str:
    return json.dumps(
        {
            "transaction_id": key,
            "customer_id": customer,
            "product_sku": "SKU-1",
            "quantity": 2,
            "amount": 21.0,
            "currency": "USD",
            "occurred_at": "2024-03-02T10:00:00",
        }
    )


def _products(
    path: Path, price_type: pa.DataType | None = None, extra: dict | None = None, n: int = 4, start: int = 0
) -> None:
    columns = {
        "product_sku": [f"SKU-{start + i}" for i in range(n)],
        "name": [f"Product {start + i}" for i in range(n)],
        "category": ["tents"] * n,
        "price": pa.array([10.5 * (i + 1) for i in range(n)]).cast(price_type or pa.float64()),
        "currency": ["USD"] * n,
        "active": [True] * n,
        "updated_at": pa.array([datetime(2024, 3, 1, 10)] * n, pa.timestamp("us")),
    }
    columns |= extra or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, spark):
    """One landing zone with every kind of bad structured input next to good rows, ingested once."""
    settings = make_settings(tmp_path_factory.mktemp("bad-inputs"))
    land = Path(settings.landing_uri)
    good = "\n".join([CUSTOMER_HEADER, *GOOD_CUSTOMERS]) + "\n"
    _write(land / "customers/batch 1 – größe.csv", good)  # spaces and unicode in the name
    _write(land / "customers/batch-1-again.csv", good)  # the same file landed twice
    _write(
        land / "customers/bad-rows.csv",
        "\n".join(
            [
                CUSTOMER_HEADER,
                "C2001,Marco Ortiz, Jr.,m@example.com,,US,pro,2024-01-01,2024-02-01T10:00:00",  # malformed
                "C2002,Ana,a@example.com,,US,pro,not-a-date,2024-02-01T10:00:00",  # wrong type
                "C2003,,b@example.com,,US,pro,2024-01-01,2024-02-01T10:00:00",  # missing required name
                "C2004," + "x" * 1_100_000 + ",c@example.com,,US,pro,2024-01-01,2024-02-01T10:00:00",  # long
                "C2005,Fine Row,f@example.com,,US,pro,2024-01-01,2024-02-01T10:00:00",
            ]
        )
        + "\n",
    )
    _write(
        land / "customers/latin1.csv",
        f"{CUSTOMER_HEADER}\nC3001,Jos\xe9,j@example.com,,ES,pro,2024-01-01,2024-02-01T10:00:00\n".encode(
            "latin-1"
        ),
    )
    _write(land / "customers/empty.csv", b"")
    _write(
        land / "customers/drift.csv",
        f"{CUSTOMER_HEADER},loyalty_tier\nC4001,Drift,d@example.com,,US,pro,2024-01-01,2024-02-01T10:00:00,gold\n",
    )
    _products(land / "products/catalogue.parquet")
    _products(
        land / "products/with-colour.parquet", extra={"colour": ["red", "green", "blue", "grey"]}, start=10
    )
    _products(land / "products/price-as-text.parquet", price_type=pa.string(), start=20)
    _write(land / "products/truncated.parquet", (land / "products/catalogue.parquet").read_bytes()[:200])
    _write(
        land / "transactions/day1.jsonl",
        "\n".join(
            [
                *(_transaction(f"T{i}", f"C1{i:03d}") for i in range(12)),
                '{"transaction_id": "T-bad", "customer_id": ',  # invalid JSON
                _transaction("T-orphan", "C9999"),
            ]
        )
        + "\n",
    )
    result = _run(settings)
    assert result.success
    return settings, materialized(result)


def _reasons(settings, source: str) -> dict[str, list[str]]:
    rows = read_quarantine(build_resources(settings)["lakehouse"])
    rows = rows[rows.source == source]
    out: dict[str, list[str]] = {}
    for file, reason in zip(rows.source_file, rows.reason, strict=True):
        out.setdefault(file, []).append(reason)
    return out


def test_every_bad_structured_input_is_quarantined_with_a_clear_reason(bad_inputs):
    settings, _ = bad_inputs
    customers = _reasons(settings, "customers")
    bad_rows = " | ".join(customers["bad-rows.csv"])
    assert "malformed CSV row: 9 fields where the header has 8" in bad_rows
    assert "column 'signup_date': not-a-date is not a valid date" in bad_rows
    assert "missing required field 'name'" in bad_rows
    assert "over the 1,000,000-byte limit" in bad_rows
    assert len(customers["latin1.csv"]) == 1
    assert customers["latin1.csv"][0].startswith("file is not valid UTF-8: byte 0xe9 at offset")
    assert customers["empty.csv"] == ["empty file"]
    assert set(customers["batch-1-again.csv"]) == {"duplicate file: same bytes as batch 1 – größe.csv"}
    assert customers["drift.csv"] == [
        "schema drift: unexpected column(s) loyalty_tier (the source's policy is reject)"
    ]
    products = _reasons(settings, "products")
    assert set(products["price-as-text.parquet"]) == {
        "type change: column 'price' arrived as string, the contract says double"
    }
    assert products["truncated.parquet"][0].startswith("unreadable Parquet file")
    transactions = _reasons(settings, "transactions")
    assert any(r.startswith("invalid JSON") for r in transactions["day1.jsonl"])
    assert "column 'customer_id': C9999 not found in customers.customer_id" in transactions["day1.jsonl"]


def test_nothing_is_lost_and_the_counts_reconcile(bad_inputs):
    settings, meta = bad_inputs
    silver = read_table(f"{settings.delta_uri}/silver_customers").to_pandas()
    assert sorted(silver.customer_id) == sorted([f"C1{i:03d}" for i in range(20)] + ["C2005"])
    runs = {r["source"]: r for r in last_ingestion_runs(build_resources(settings)["lakehouse"])}
    for source in STRUCTURED:
        run, m = runs[source], meta[f"silver_{source}"]
        assert run["landed"] == run["accepted"] + run["quarantined"] + run["duplicates"]
        assert (m["records_landed"], m["records_accepted"]) == (run["landed"], run["accepted"])
        bronze = read_table(f"{settings.delta_uri}/bronze_{source}").num_rows
        assert run["landed"] == bronze, "every landed record is accounted for"
    # customers: 20 good + 20 copies + 5 bad-rows lines + latin1 + empty + drift
    assert (runs["customers"]["landed"], runs["customers"]["accepted"]) == (48, 21)
    assert (runs["customers"]["quarantined"], runs["customers"]["duplicates"]) == (7, 20)
    assert runs["products"]["accepted"] == 8  # catalogue + the added column's file
    silver_products = read_table(f"{settings.delta_uri}/silver_products").to_pandas().set_index("product_sku")
    assert silver_products.loc["SKU-11", "colour"] == "green"  # products' drift policy is add
    assert silver_products.loc["SKU-1", "colour"] is None


def test_quarantine_rows_carry_file_line_raw_content_and_run(bad_inputs):
    settings, _ = bad_inputs
    rows = read_quarantine(build_resources(settings)["lakehouse"])
    wrong_type = rows[rows.reason.str.contains("not-a-date", regex=False)].iloc[0]
    assert (wrong_type.layer, wrong_type.source_file, wrong_type.line) == ("silver", "bad-rows.csv", 3)
    assert wrong_type.raw.startswith("C2002,Ana")
    assert wrong_type.run_id
    long_row = rows[rows.reason.str.contains("byte limit", regex=False)].iloc[0]
    assert long_row.layer == "bronze" and len(long_row.raw) == 4000  # raw content is bounded


def test_tombstones_delete_keys_and_a_rerun_changes_nothing(bad_inputs):
    settings, _ = bad_inputs
    silver_version = table_version(f"{settings.delta_uri}/silver_customers")
    again = materialized(_run(settings))
    assert again["silver_customers"]["records_landed"] == 0
    assert table_version(f"{settings.delta_uri}/silver_customers") == silver_version, "no empty commit"
    land = Path(settings.landing_uri)
    _write(
        land / "customers/deletes.csv", "customer_id,updated_at,_deleted\nC1015,2024-05-01T00:00:00,true\n"
    )
    after = materialized(_run(settings))
    assert after["silver_customers"]["records_deleted"] == 1
    silver = read_table(f"{settings.delta_uri}/silver_customers").to_pandas()
    assert "C1015" not in set(silver.customer_id) and len(silver) == 20


def test_a_late_older_version_does_not_overwrite_a_newer_one(tmp_path, spark):
    settings = make_settings(tmp_path / "home")
    land = Path(settings.landing_uri)
    _write(
        land / "customers/new.csv",
        f"{CUSTOMER_HEADER}\nC5001,Newer Name,n@example.com,,US,pro,2024-01-01,2024-06-01T00:00:00\n",
    )
    assert _run(settings).success
    _write(
        land / "customers/old.csv",
        f"{CUSTOMER_HEADER}\nC5001,Older Name,n@example.com,,US,pro,2024-01-01,2024-01-01T00:00:00\n",
    )
    meta = materialized(_run(settings))["silver_customers"]
    assert (meta["records_landed"], meta["records_accepted"], meta["records_duplicates"]) == (1, 0, 1)
    silver = read_table(f"{settings.delta_uri}/silver_customers").to_pandas()
    assert silver.set_index("customer_id").loc["C5001", "name"] == "Newer Name"


def test_a_replayed_stream_batch_is_not_written_twice(tmp_path, spark):
    """A crash after a batch's Delta commit but before the checkpoint records it replays the batch."""
    settings = make_settings(tmp_path / "home")
    lakehouse = build_resources(settings)["lakehouse"]
    contract = next(c for c in load_sources(settings.sources_file) if c.name == "customers")
    land = Path(settings.landing_uri) / "customers"
    for i in range(4):
        _write(land / f"part-{i}.csv", f"{CUSTOMER_HEADER}\n{GOOD_CUSTOMERS[i]}\n")
    import assets.structured.assets as structured

    real_append = lakehouse.__class__.append
    crashed = []

    def append_then_crash(self, df, name, *args, **kwargs):
        version = real_append(self, df, name, *args, **kwargs)
        if kwargs.get("txn") and not crashed:
            crashed.append(kwargs["txn"])
            raise RuntimeError("simulated crash after the Delta commit")
        return version

    settings_small = settings.model_copy(update={"stream_max_files_per_batch": 2})
    lakehouse = build_resources(settings_small)["lakehouse"]
    lakehouse.__class__.append = append_then_crash
    try:
        with pytest.raises(Exception, match="simulated crash"):
            structured.ingest_new_files(spark, lakehouse, contract, "run-1", current_ingest_day())
    finally:
        lakehouse.__class__.append = real_append
    committed = read_table(lakehouse.table_path("bronze_customers")).num_rows
    assert committed == 2, "the first batch (2 files) was committed before the crash"
    structured.ingest_new_files(spark, lakehouse, contract, "run-2", current_ingest_day())
    bronze = read_table(lakehouse.table_path("bronze_customers")).to_pandas()
    assert sorted(bronze._source_file) == [f"part-{i}.csv" for i in range(4)]
    assert len(bronze) == 4, "the replayed batch was skipped by its Delta transaction id"


def test_killed_run_rerun_has_no_duplicates_and_loses_nothing(tmp_path, spark):
    """SIGKILL a real `groundwork run` mid-stream, run again: every file exactly once."""
    settings = make_settings(tmp_path / "home")
    land = Path(settings.landing_uri) / "customers"
    files = 40
    for i in range(files):
        _write(
            land / f"part-{i:03d}.csv",
            f"{CUSTOMER_HEADER}\n{_customer(f'C{6000 + i}', f'Name {i}')}\n",
        )
    env = {
        **os.environ,
        "GROUNDWORK_HOME": str(settings.home),
        "GROUNDWORK_SPARK_MASTER": "local[2]",
        "GROUNDWORK_STREAM_MAX_FILES_PER_BATCH": "2",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    command = [sys.executable, "-m", "pipelines.cli", "run", "-s", "bronze_customers"]
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bronze = f"{settings.delta_uri}/bronze_customers"
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and (table_version(bronze) or 0) < 3:
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    partial = read_table(bronze).num_rows
    assert 0 < partial < files, f"killed mid-way ({partial} of {files} files)"
    rerun = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    rows = read_table(bronze).to_pandas()
    assert len(rows) == files and rows._source_file.is_unique


def test_a_past_ingest_day_is_rebuilt_from_its_files_by_a_backfill(tmp_path, spark):
    """Yesterday's delivery had a bad row; the corrected file is re-landed; a backfill of that day (the
    `dagster asset materialize --partition-range` CLI) replaces its records without duplicates."""
    settings = make_settings(tmp_path / "home")
    land = Path(settings.landing_uri) / "customers"
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    bad = _write(
        land / "delivery.csv",
        f"{CUSTOMER_HEADER}\n{GOOD_CUSTOMERS[0]}\n{_customer('C7001', 'Fixed Later', signup='bad-date')}\n",
    )
    lakehouse = build_resources(settings)["lakehouse"]
    contract = next(c for c in load_sources(settings.sources_file) if c.name == "customers")
    ingest_new_files(spark, lakehouse, contract, "yesterday-run", yesterday)  # as yesterday's run did
    bad.write_text(f"{CUSTOMER_HEADER}\n{GOOD_CUSTOMERS[0]}\n{_customer('C7001', 'Fixed Later')}\n")
    env = {
        **os.environ,
        "GROUNDWORK_HOME": str(settings.home),
        "GROUNDWORK_SPARK_MASTER": "local[2]",
        "PYTHONPATH": str(PROJECT_ROOT),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    (tmp_path / "dagster").mkdir()
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            "bronze_customers",
            "--partition-range",
            f"{yesterday}...{yesterday}",
        ],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert _run(settings).success  # today's run: nothing new lands; silver applies the rebuilt day
    bronze = read_table(lakehouse.table_path("bronze_customers")).to_pandas()
    assert len(bronze) == 2 and set(bronze._run_id) != {"yesterday-run"}
    assert {str(d) for d in bronze._ingest_date} == {yesterday}
    silver = read_table(lakehouse.table_path("silver_customers")).to_pandas()
    assert sorted(silver.customer_id) == ["C1000", "C7001"]


def test_documents_carry_access_groups_from_sidecars_and_folders(tmp_path, spark):
    settings = make_settings(tmp_path / "home")
    docs = Path(settings.documents_landing)
    for relative in ["policies/return-policy.md", "hr/parental-leave.md", "faq/gift-cards.md"]:
        _write(docs / relative, (SAMPLES_DIR / "documents" / relative).read_bytes())
    _write(docs / "hr/_access.json", '{"groups": ["hr"]}')
    _write(docs / "faq/gift-cards.md.access.json", '{"groups": ["sales", "support"]}')
    first = materialized(run_all(settings))
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
    second = materialized(run_all(settings))
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
    silver_run = materialized(run_all(settings))["silver_documents"]
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
    idle = materialized(run_all(settings))
    assert table_version(f"{settings.delta_uri}/silver_documents") == silver_version
    assert table_version(f"{settings.delta_uri}/document_chunks") == gold_version
    assert idle["document_chunks"]["documents_rechunked"] == 0
    path = Path(settings.documents_landing) / "policies/shipping-policy.md"
    path.write_text(path.read_text() + "\n\nNew: free shipping on orders over $20 during December.\n")
    changed = materialized(run_all(settings))
    assert changed["bronze_documents"]["files_added"] == 1  # rewritten in place, seen by the listing
    assert changed["document_chunks"]["documents_rechunked"] == 1
    assert 0 < changed["chunk_embeddings"]["chunks_embedded"] <= changed["document_chunks"]["chunks_written"]


def test_stream_hands_each_file_over_once(tmp_path, spark):
    root = tmp_path / "landing"
    _write(root / "a b.txt", "x")
    _write(root / "sub/ü.md", "y")
    _write(root / "_hidden.txt", "z")
    seen: list[str] = []
    checkpoint = str(tmp_path / "checkpoint")
    stream_landed_files(get_spark(), str(root), checkpoint, lambda files, _: seen.extend(files.path))
    assert sorted(seen) == ["a b.txt", "sub/ü.md"]
    _write(root / "c.txt", "new")
    stream_landed_files(get_spark(), str(root), checkpoint, lambda files, _: seen.extend(files.path))
    assert sorted(seen) == ["a b.txt", "c.txt", "sub/ü.md"]


def test_a_retried_step_replaces_its_runs_record_and_an_empty_rejection_writes_nothing(spark, tmp_path):
    from assets.quarantine import INGESTION_RUNS_TABLE, record_ingestion_run, write_quarantine

    lakehouse = build_resources(make_settings(tmp_path / "home"))["lakehouse"]
    for run_id, landed, quarantined in [("run-1", 3, 0), ("run-1", 4, 1), ("run-2", 1, 0)]:
        record_ingestion_run(
            lakehouse, "orders", run_id, landed, landed - quarantined, quarantined, duplicates=0
        )
    runs = lakehouse.read_arrow(INGESTION_RUNS_TABLE).to_pylist()
    recorded = sorted((r["run_id"], r["landed"], r["quarantined"]) for r in runs)
    assert recorded == [("run-1", 4, 1), ("run-2", 1, 0)], "the retry of run-1 replaced its first record"

    nothing = spark.createDataFrame([], "source string, reason string")
    assert write_quarantine(spark, lakehouse, "silver", nothing, ("app", 1)) == 0
    assert not lakehouse.exists("quarantine_silver"), "no rejected rows, no commit"
