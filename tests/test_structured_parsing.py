"""Structured sources: every landed line is a record or an error with its line number."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from assets.structured.contracts import SourceContract, load_sources
from assets.structured.transform import parse_csv, parse_jsonl
from resources.settings import DEFAULT_SOURCES_FILE, SAMPLES_DIR


def test_sample_customers_csv_flags_the_malformed_row():
    rows = list(parse_csv((SAMPLES_DIR / "customers/customers.csv").read_bytes()))
    assert len(rows) == 65
    errors = {line: error for line, _, _, error in rows if error}
    assert list(errors) == [49]
    assert "9 fields where the header has 8" in errors[49]
    line22 = next(record for line, _, record, _ in rows if line == 22)
    assert line22["customer_id"] is None  # empty field → missing, judged by the contract in silver


def test_csv_multiline_quoted_fields_keep_their_line_numbers():
    content = b'id,body\n1,"first\nline"\n2,plain\n'
    rows = list(parse_csv(content))
    assert [(line, record["id"]) for line, _, record, _ in rows] == [(2, "1"), (4, "2")]
    assert rows[0][2]["body"] == "first\nline"


def test_csv_bad_encoding_and_empty_file():
    [(_, _, record, error)] = list(parse_csv(b"id,name\n1,caf\xe9\n"))
    assert record is None and "not valid UTF-8" in error
    assert list(parse_csv(b"")) == [(0, "", None, "empty file")]


def test_jsonl_invalid_line_and_non_object():
    content = b'{"a": 1, "b": "x"}\n{"a": 2,\n\n[1, 2]\n{"a": null}\n'
    rows = list(parse_jsonl(content))
    assert [(line, error is None) for line, _, _, error in rows] == [
        (1, True),
        (2, False),
        (4, False),
        (5, True),
    ]
    assert rows[0][2] == {"a": "1", "b": "x"}
    assert rows[1][3].startswith("invalid JSON")
    assert "not an object" in rows[2][3]
    assert rows[3][2] == {"a": None}


def test_sample_sources_declare_keys_and_types():
    sources = {s.name: s for s in load_sources(DEFAULT_SOURCES_FILE)}
    assert set(sources) >= {"customers", "transactions", "support_tickets", "products"}
    assert sources["transactions"].format == "jsonl"
    assert sources["customers"].primary_key == ["customer_id"]


def test_contract_errors_are_clear(tmp_path: Path):
    with pytest.raises(ValidationError, match="not declared"):
        SourceContract(name="x", format="csv", primary_key=["id"], columns=[{"name": "other"}])
    with pytest.raises(ValidationError, match="unknown type"):
        SourceContract(name="x", format="csv", primary_key=["id"], columns=[{"name": "id", "type": "uuid"}])
