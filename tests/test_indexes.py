"""LanceDB indexes: the HNSW index appears past its threshold and keeps recall@10 >= 0.95; maintenance
compacts and cleans up old versions."""

from __future__ import annotations

import math
from datetime import timedelta

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from resources.lancedb.query import RERANK_POOL, VECTOR_SEARCH_REFINE, nearest, nearest_arrow, rerank_exact
from resources.lancedb.sync import _index_types, maintain_indexes

DIM = 384


def _clustered(n: int, seed: int = 7) -> np.ndarray:
    """Unit vectors around 50 centres: the shape real embeddings have, and a fair recall test."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, DIM))
    points = centres[rng.integers(0, 50, n)] + 0.35 * rng.normal(size=(n, DIM))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _table(tmp_path, vectors: np.ndarray):
    db = lancedb.connect(tmp_path / "db")
    data = pa.table(
        {
            "chunk_id": [f"c{i}" for i in range(len(vectors))],
            "text": [f"chunk number {i}" for i in range(len(vectors))],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
        }
    )
    return db.create_table("t", data=data)


def test_vector_index_only_past_threshold(tmp_path):
    table = _table(tmp_path, _clustered(300))
    maintain_indexes(table, vector_index_min_rows=1_000, keep_versions=timedelta(days=7))
    assert "IVFHNSWSQ" not in _index_types(table)
    assert _index_types(table) & {"FTS", "INVERTED"}


def test_hnsw_recall_at_10_against_exact_search(tmp_path):
    vectors = _clustered(6_000)
    table = _table(tmp_path, vectors)
    maintain_indexes(table, vector_index_min_rows=5_000, keep_versions=timedelta(days=7))
    assert "IVFHNSWSQ" in _index_types(table)
    queries = _clustered(50, seed=11)
    dataset = table.to_lance()
    recalls, reranked_recalls = [], []
    for q in queries:
        exact = set(nearest(table, q, 10, exact=True).select(["chunk_id"]).to_arrow()["chunk_id"].to_pylist())
        approx = set(nearest(table, q, 10).select(["chunk_id"]).to_arrow()["chunk_id"].to_pylist())
        recalls.append(len(exact & approx) / 10)
        # The serving path: the index's candidates unrefined, the first of them re-ranked on
        # full-precision vectors.
        found = nearest_arrow(dataset, q, 10 * VECTOR_SEARCH_REFINE, [], refine_factor=None, with_row_id=True)
        pool = found["_rowid"].to_numpy()[: math.ceil(10 * RERANK_POOL)]
        reranked = rerank_exact(dataset, q, pool, 10, ["chunk_id"])["chunk_id"].to_pylist()
        reranked_recalls.append(len(exact & set(reranked)) / 10)
    assert np.mean(recalls) >= 0.95, np.mean(recalls)
    assert np.mean(reranked_recalls) >= 0.95, np.mean(reranked_recalls)


def test_exact_rerank_orders_rows_by_cosine_distance_as_lance_does(tmp_path):
    vectors = _clustered(500) * np.linspace(0.5, 2.0, 500, dtype=np.float32)[:, None]  # not unit length
    table = _table(tmp_path, vectors)
    dataset = table.to_lance()
    query = _clustered(1, seed=3)[0] * 3.0
    exact = nearest_arrow(dataset, query, 20, ["chunk_id"], with_row_id=True)
    shuffled = np.random.default_rng(1).permutation(exact["_rowid"].to_numpy())
    ranked = rerank_exact(dataset, query, shuffled, 8, ["chunk_id"])
    assert ranked.column_names == ["chunk_id", "_rowid", "_distance"]
    assert ranked["_rowid"].to_pylist() == exact["_rowid"].to_pylist()[:8]
    assert ranked["chunk_id"].to_pylist() == exact["chunk_id"].to_pylist()[:8]
    assert ranked["_distance"].to_pylist() == pytest.approx(exact["_distance"].to_pylist()[:8], abs=1e-5)


def test_maintenance_compacts_and_cleans_old_versions(tmp_path):
    table = _table(tmp_path, _clustered(200))
    for i in range(5):
        more = _clustered(10, seed=100 + i)
        table.add(
            pa.table(
                {
                    "chunk_id": [f"n{i}-{j}" for j in range(10)],
                    "text": ["more"] * 10,
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(more.reshape(-1)), DIM),
                }
            )
        )
    fragments_before = len(table.to_lance().get_fragments())
    versions_before = len(table.list_versions())
    maintain_indexes(table, vector_index_min_rows=10_000, keep_versions=timedelta(seconds=0))
    assert len(table.to_lance().get_fragments()) < fragments_before
    assert len(table.list_versions()) < versions_before
    assert table.count_rows() == 250
