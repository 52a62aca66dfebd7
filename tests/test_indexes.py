"""LanceDB indexes: the HNSW index appears past its threshold and keeps recall@10 >= 0.95; maintenance
compacts and cleans up old versions."""

from __future__ import annotations

from datetime import timedelta

import lancedb
import numpy as np
import pyarrow as pa

from assets.embeddings.index import _index_types, maintain_indexes, nearest

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
    recalls = []
    for q in queries:
        exact = set(nearest(table, q, 10, exact=True).select(["chunk_id"]).to_arrow()["chunk_id"].to_pylist())
        approx = set(nearest(table, q, 10).select(["chunk_id"]).to_arrow()["chunk_id"].to_pylist())
        recalls.append(len(exact & approx) / 10)
    assert np.mean(recalls) >= 0.95, np.mean(recalls)


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
