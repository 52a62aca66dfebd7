"""How the Searcher filters a vector query by access groups: after the search when the caller's groups
hold a large share of the rows, falling back to before it when too few rows survive, before it for a
small share or metadata filters. Every plan must return exactly what an exact prefiltered search returns
(the table is below the vector-index threshold, so every search here is exact), and never a chunk outside
the caller's groups."""

from __future__ import annotations

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from assets.embeddings.index import activate, embeddings_schema, model_table_name, nearest
from resources import EmbedderResource
from serving.search import Searcher, access_clause

DIM = 384
CENTRES = 40
ROWS = 2_000
OWNED_BY_FINANCE = range(0, 4)  # clusters whose every chunk belongs to finance alone
EMBEDDER = EmbedderResource()


def _centres() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(CENTRES, DIM))


def _unit(points: np.ndarray) -> np.ndarray:
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _groups(i: int, centre: int) -> list[str]:
    if i % 100 == 0:
        return ["rare"]
    if centre in OWNED_BY_FINANCE:
        return ["finance"]
    return ["public"] if i % 2 else ["finance"]


@pytest.fixture(scope="module")
def searcher(tmp_path_factory) -> Searcher:
    rng = np.random.default_rng(5)
    centre_of = rng.integers(0, CENTRES, ROWS)
    vectors = _unit(_centres()[centre_of] + 0.35 * rng.normal(size=(ROWS, DIM)))
    db = lancedb.connect(tmp_path_factory.mktemp("filtering") / "lancedb")
    name = model_table_name("chunks", EMBEDDER.model_id)
    schema = embeddings_schema(DIM, EMBEDDER.model_id)
    rows = {
        "chunk_id": [f"c{i}" for i in range(ROWS)],
        "document_id": [f"d{i // 4}" for i in range(ROWS)],
        "chunk_index": pa.array([i % 4 for i in range(ROWS)], pa.int32()),
        "text": [f"chunk {i}" for i in range(ROWS)],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
        "path": [f"docs/d{i // 4}.md" for i in range(ROWS)],
        "title": [f"Document {i // 4}" for i in range(ROWS)],
        "media_type": ["text/markdown"] * ROWS,
        "heading_path": [f"Section {i % 3}" for i in range(ROWS)],
        "page": pa.nulls(ROWS, pa.int32()),
        "access_groups": [_groups(i, c) for i, c in enumerate(centre_of)],
        "delta_version": pa.array([1 + i // 500 for i in range(ROWS)], pa.int64()),
        "content_hash": [f"h{i}" for i in range(ROWS)],
        "model_name": ["m"] * ROWS,
        "model_version": ["v"] * ROWS,
        "created_at": pa.nulls(ROWS, pa.timestamp("us", tz="UTC")),
    }
    table = db.create_table(name, schema=schema)
    table.add(pa.table(rows).cast(schema.remove_metadata()))
    activate(db, "chunks", name)
    return Searcher(db, "chunks", EMBEDDER)


def _query(centre: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=DIM)
    return _unit((_centres()[centre] + 0.35 * noise)[None, :])[0]


def _exact(searcher: Searcher, vector: np.ndarray, k: int, groups: list[str], where: str = "") -> list[str]:
    clause = access_clause(groups) + (f" AND ({where})" if where else "")
    query = nearest(searcher.current()[0], vector, k, exact=True).where(clause, prefilter=True)
    return [r["chunk_id"] for r in query.select(["chunk_id"]).to_list()]


def _search(searcher: Searcher, vector: np.ndarray, k: int, groups: list[str], **kw) -> tuple[list, dict]:
    before = dict(searcher.filter_plans)
    hits = searcher.search("", k=k, mode="vector", groups=groups, vector=vector, **kw)
    plans = {p: n - before.get(p, 0) for p, n in searcher.filter_plans.items() if n != before.get(p, 0)}
    assert all(set(h.access_groups) & set(groups) for h in hits)
    return hits, plans


def test_a_large_share_is_filtered_after_the_search_with_the_exact_results(searcher):
    for seed, centre in enumerate(range(10, 20)):
        vector = _query(centre, seed)
        hits, plans = _search(searcher, vector, 10, ["public"])
        assert plans == {"postfilter": 1}
        assert [h.chunk_id for h in hits] == _exact(searcher, vector, 10, ["public"])
        assert all(h.delta_version >= 1 and h.heading_path.startswith("Section") for h in hits)


def test_too_few_survivors_fall_back_to_the_prefilter(searcher):
    # Near a cluster that finance owns alone, the nearest candidates hold no public chunk at all.
    vector = _query(OWNED_BY_FINANCE[0], 99)
    hits, plans = _search(searcher, vector, 10, ["public"])
    assert plans == {"postfilter_fallback": 1, "prefilter": 1}
    assert [h.chunk_id for h in hits] == _exact(searcher, vector, 10, ["public"])
    assert len(hits) == 10


def test_a_small_share_and_metadata_filters_use_the_prefilter(searcher):
    vector = _query(25, 7)
    hits, plans = _search(searcher, vector, 5, ["rare"])
    assert plans == {"prefilter": 1}
    assert [h.chunk_id for h in hits] == _exact(searcher, vector, 5, ["rare"]) and len(hits) == 5
    assert all(h.access_groups == ("rare",) for h in hits)

    documents = [f"d{i}" for i in range(0, 500, 5)]
    hits, plans = _search(searcher, vector, 5, ["public"], filters={"document_id": documents})
    assert plans == {"prefilter": 1}
    where = f"document_id IN ({', '.join(repr(d) for d in documents)})"
    assert [h.chunk_id for h in hits] == _exact(searcher, vector, 5, ["public"], where)


def test_groups_holding_no_row_return_nothing_without_searching(searcher):
    hits, plans = _search(searcher, _query(12, 1), 10, ["nobody"])
    assert hits == [] and plans == {"none_visible": 1}
