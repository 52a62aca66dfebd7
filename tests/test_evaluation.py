"""Retrieval metrics and gold files: hand-computed values, clear errors, and the shipped gold set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.evaluation import (
    MODES,
    distinct,
    evaluate,
    hit_at,
    load_gold,
    ndcg_at,
    recall_at,
    reciprocal_rank,
)
from resources.settings import SAMPLES_DIR


def test_metrics_match_hand_computed_values():
    ranked = ["a", "x", "b", "y", "z", "c"]
    assert recall_at(ranked, ["a", "b", "c"], 5) == pytest.approx(2 / 3)
    assert recall_at(ranked, ["c"], 5) == 0.0
    assert reciprocal_rank(ranked, ["b", "c"]) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x"] * 10 + ["a"], ["a"]) == 0.0  # beyond the cut-off of 10
    dcg = 1 + 1 / math.log2(4)
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at(ranked, ["a", "b"]) == pytest.approx(dcg / ideal)
    assert ndcg_at(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    # hit@k: any relevant document in the top k, where recall counts the fraction of them.
    assert hit_at(ranked, ["a", "b", "c"], 5) == 1.0
    assert hit_at(ranked, ["c"], 5) == 0.0
    assert hit_at(ranked, ["c", "z"], 5) == 1.0 and recall_at(ranked, ["c", "z"], 5) == 0.5


def _gold(tmp_path: Path, records: list[dict]):
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    return load_gold(path)


def test_chunks_of_one_document_count_once(tmp_path):
    assert distinct(["a", "a", "b", "a", "c", "b"]) == ["a", "b", "c"]

    def search(query: str, n: int, mode: str) -> list[str]:
        return ["noise.md"] * 3 + ["doc.md"] * 5 + ["other.md"]

    gold = _gold(tmp_path, [{"query": "q", "relevant": ["doc.md"]}])
    report = evaluate(search, gold, k=2, modes=["vector"], indexed_paths={"doc.md", "noise.md"})
    metrics = report.modes["vector"]
    assert metrics.recall == 1.0  # second distinct document, within k=2
    assert metrics.mrr == pytest.approx(0.5)
    assert report.unknown_paths == []
    assert metrics.hit == 1.0
    assert report.metrics() == {
        "vector_hit_at_2": 1.0,
        "vector_recall_at_2": 1.0,
        "vector_mrr_at_10": 0.5,
        "vector_ndcg_at_10": pytest.approx(1 / math.log2(3)),
    }


def test_gold_paths_missing_from_the_index_are_reported(tmp_path):
    gold = _gold(tmp_path, [{"query": "q", "relevant": ["gone.md", "here.md"]}])
    report = evaluate(lambda q, n, m: ["here.md"], gold, modes=MODES, indexed_paths={"here.md"})
    assert report.unknown_paths == ["gone.md"]
    assert set(report.modes) == set(MODES)
    assert report.to_dict()["modes"]["hybrid"]["recall@5"] == 0.5
    assert report.to_dict()["modes"]["hybrid"]["hit@5"] == 1.0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", ":1: not JSON"),
        ('{"query": "", "relevant": ["a"]}', '"query" must be'),
        ('{"query": "q", "relevant": []}', '"relevant" must be'),
        ('{"query": "q", "relevant": "a.md"}', '"relevant" must be'),
        ('["q"]', "expected an object"),
    ],
)
def test_malformed_gold_lines_are_clear_errors(tmp_path, line, message):
    path = tmp_path / "gold.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        load_gold(path)


def test_missing_gold_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_gold(tmp_path / "nope.jsonl")


def test_sample_gold_set_names_landed_documents():
    """Paths are relative to landing/documents/, the `path` every chunk carries."""
    gold = load_gold(SAMPLES_DIR / "gold" / "questions.jsonl")
    assert len(gold) >= 10
    for item in gold:
        for relative in item.relevant:
            assert (SAMPLES_DIR / "documents" / relative).is_file(), relative
