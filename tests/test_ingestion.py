"""Ingestion into Delta with the real engines: streaming pickup exactly once, bad input quarantined with
a reason, counts that reconcile, schema drift, tombstones, access groups, backfills by ingest date."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_settings, materialized, run_all

from assets.landing import stream_landed_files
from assets.quarantine import last_ingestion_runs, read_quarantine
from assets.structured.assets import current_ingest_day
from assets.structured.contracts import load_sources
from resources import build_resources
from resources.lakehouse import read_table, table_version
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


def test_a_merge_adds_new_columns_to_an_existing_table(spark, tmp_path):
    """Schema drift with the ``add`` policy on a table that exists: the MERGE sees the added column."""
    lakehouse = build_resources(make_settings(tmp_path / "home"))["lakehouse"]
    shape = "id long, name string, _delete boolean"
    lakehouse.apply_changes(
        spark, spark.createDataFrame([(1, "a", False), (2, "b", False)], shape), "t", ["id"]
    )
    drifted = spark.createDataFrame(
        [(1, None, True, None), (2, "B", False, "green"), (3, "c", False, "red")], f"{shape}, colour string"
    )
    lakehouse.apply_changes(spark, drifted, "t", ["id"], "t.name <> s.name OR t.colour IS NULL")
    rows = sorted(lakehouse.read_arrow("t").to_pylist(), key=lambda r: r["id"])
    assert rows == [{"id": 2, "name": "B", "colour": "green"}, {"id": 3, "name": "c", "colour": "red"}]


def test_a_retried_step_replaces_its_runs_record_and_quarantine_writes_are_idempotent(spark, tmp_path):
    from assets.quarantine import INGESTION_RUNS_TABLE, record_ingestion_run, write_quarantine

    lakehouse = build_resources(make_settings(tmp_path / "home"))["lakehouse"]
    for run_id, landed, quarantined in [("run-1", 3, 0), ("run-1", 4, 1), ("run-2", 1, 0)]:
        record_ingestion_run(
            lakehouse, "orders", run_id, landed, landed - quarantined, quarantined, duplicates=0
        )
    runs = lakehouse.read_arrow(INGESTION_RUNS_TABLE).to_pylist()
    recorded = sorted((r["run_id"], r["landed"], r["quarantined"]) for r in runs)
    assert recorded == [("run-1", 4, 1), ("run-2", 1, 0)], "the retry of run-1 replaced its first record"

    shape = (
        "source string, source_file string, line long, record_key string, raw string, reason string, "
        "run_id string, quarantined_at timestamp"
    )
    nothing = spark.createDataFrame([], shape)
    assert write_quarantine(lakehouse, "silver", nothing, ("app", 1)) == 0
    assert not lakehouse.exists("quarantine_silver"), "no rejected rows, no commit"

    now = datetime.now(UTC)
    row = ("orders", "a.csv", 3, "a.csv:3", "x,y", "bad date", "run-1", now)
    first = write_quarantine(lakehouse, "silver", spark.createDataFrame([row], shape), ("app", 1))
    replay = write_quarantine(lakehouse, "silver", spark.createDataFrame([row], shape), ("app", 1))
    assert replay == first, "a replayed batch (same transaction) commits nothing"
    again = [(*row[:-2], "run-2", now), ("orders", "a.csv", 4, "a.csv:4", "z", "bad date", "run-2", now)]
    write_quarantine(lakehouse, "silver", spark.createDataFrame(again, shape), ("app", 2))
    held = lakehouse.read_arrow("quarantine_silver").to_pylist()
    held = sorted((r["record_key"], r["run_id"]) for r in held)
    assert held == [("a.csv:3", "run-1"), ("a.csv:4", "run-2")], "a rejection seen again is not added twice"
    assert lakehouse.transaction_version("quarantine_silver", "app") == 2
