"""How the Searcher filters a vector query by access groups: after the search when the caller's groups
hold a large share of the rows, falling back to before it when too few rows survive, before it for a
small share or metadata filters. Every plan must return exactly what an exact prefiltered search returns
(the table is below the vector-index threshold, so every search here is exact), and never a chunk outside
the caller's groups."""

from __future__ import annotations

from dataclasses import replace

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from lancedb.index import FTS

from resources import EmbedderResource
from resources.lancedb.query import nearest
from resources.lancedb.tables import (
    CITATION_COLUMN,
    CITATION_FIELDS,
    activate,
    embeddings_schema,
    model_table_name,
    open_or_create,
    with_citations,
)
from serving.search import Searcher, _rows, access_clause

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


def _searcher_over_new_table(path, citation_column: bool = True) -> Searcher:
    """2,000 chunks loaded in four batches (four fragments, as a grown index has), below the vector
    index threshold; without ``citation_column``, laid out as tables built before that column."""
    rng = np.random.default_rng(5)
    centre_of = rng.integers(0, CENTRES, ROWS)
    vectors = _unit(_centres()[centre_of] + 0.35 * rng.normal(size=(ROWS, DIM)))
    db = lancedb.connect(path / "lancedb")
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
    loaded = with_citations(pa.table(rows))
    if not citation_column:
        schema = schema.remove(schema.get_field_index(CITATION_COLUMN))
        loaded = loaded.drop_columns([CITATION_COLUMN])
    table = db.create_table(name, schema=schema)
    loaded = loaded.cast(schema.remove_metadata())
    for start in range(0, ROWS, 500):
        table.add(loaded.slice(start, 500))
    activate(db, "chunks", name)
    return Searcher(db, "chunks", EMBEDDER)


@pytest.fixture(scope="module")
def searcher(tmp_path_factory) -> Searcher:
    return _searcher_over_new_table(tmp_path_factory.mktemp("filtering"))


def _query(centre: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=DIM)
    return _unit((_centres()[centre] + 0.35 * noise)[None, :])[0]


def _exact_scored(
    searcher: Searcher, vector: np.ndarray, k: int, groups: list[str] | None, where: str = ""
) -> list[tuple[str, float]]:
    clauses = ([access_clause(groups)] if groups is not None else []) + ([f"({where})"] if where else [])
    query = nearest(searcher.current()[0], vector, k, exact=True)
    if clauses:
        query = query.where(" AND ".join(clauses), prefilter=True)
    return [(r["chunk_id"], 1.0 - r["_distance"]) for r in query.select(["chunk_id"]).to_list()]


def _exact(searcher: Searcher, vector: np.ndarray, k: int, groups: list[str], where: str = "") -> list[str]:
    return [chunk_id for chunk_id, _ in _exact_scored(searcher, vector, k, groups, where)]


def _search(
    searcher: Searcher, vector: np.ndarray, k: int, groups: list[str] | None, **kw
) -> tuple[list, dict]:
    before = dict(searcher.filter_plans)
    hits = searcher.search("", k=k, mode="vector", groups=groups, vector=vector, **kw)
    plans = {p: n - before.get(p, 0) for p, n in searcher.filter_plans.items() if n != before.get(p, 0)}
    assert groups is None or all(set(h.access_groups) & set(groups) for h in hits)
    return hits, plans


def _assert_exact(hits, exact: list[tuple[str, float]]) -> None:
    """The same chunks in the same order as exact search, with its cosine similarities as scores."""
    assert [h.chunk_id for h in hits] == [chunk_id for chunk_id, _ in exact]
    assert [h.score for h in hits] == pytest.approx([score for _, score in exact], abs=1e-4)


def test_a_large_share_is_filtered_after_the_search_with_the_exact_results(searcher):
    for seed, centre in enumerate(range(10, 20)):
        vector = _query(centre, seed)
        hits, plans = _search(searcher, vector, 10, ["public"])
        assert plans == {"postfilter": 1}
        _assert_exact(hits, _exact_scored(searcher, vector, 10, ["public"]))
        assert all(h.delta_version >= 1 and h.heading_path.startswith("Section") for h in hits)


def test_an_unfiltered_search_returns_the_exact_results_and_scores(searcher):
    for seed, centre in enumerate(range(20, 25)):
        vector = _query(centre, seed)
        hits, plans = _search(searcher, vector, 10, None)
        assert plans == {"unfiltered": 1}
        _assert_exact(hits, _exact_scored(searcher, vector, 10, None))


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


def test_rows_whose_groups_change_are_found_in_the_new_version(tmp_path):
    """The post-search filter keeps the rows each access clause admits per table version: chunks moved
    from finance to public are served at once, and chunks moved out are not."""
    searcher = _searcher_over_new_table(tmp_path)
    vector = _query(15, 3)
    before, _ = _search(searcher, vector, 10, ["public"])
    table = searcher.current()[0]
    nearest_finance = [
        r["chunk_id"]
        for r in nearest(table, vector, 10, exact=True)
        .where(access_clause(["finance"]), prefilter=True)
        .select(["chunk_id"])
        .to_list()
    ]
    moved_out = before[0].chunk_id
    moved_in = ", ".join(repr(c) for c in nearest_finance)
    table.update(where=f"chunk_id IN ({moved_in})", values={"access_groups": ["public"]})
    table.update(where=f"chunk_id = '{moved_out}'", values={"access_groups": ["finance"]})

    after, plans = _search(searcher, vector, 10, ["public"])
    assert plans == {"postfilter": 1}
    assert [h.chunk_id for h in after] == _exact(searcher, vector, 10, ["public"])
    assert moved_out not in {h.chunk_id for h in after}
    assert set(nearest_finance) & {h.chunk_id for h in after}


def test_an_index_with_fewer_rows_than_k_or_none_answers_with_what_it_has(tmp_path):
    searcher = _searcher_over_new_table(tmp_path)
    table = searcher.current()[0]
    table.delete("chunk_id NOT IN ('c1', 'c2', 'c3')")
    vector = _query(0, 1)
    hits, plans = _search(searcher, vector, 5, None)
    assert plans == {"unfiltered": 1}
    assert sorted(h.chunk_id for h in hits) == ["c1", "c2", "c3"]
    _assert_exact(hits, _exact_scored(searcher, vector, 5, None))

    table.delete("true")
    assert _search(searcher, vector, 5, None)[0] == []
    assert _search(searcher, vector, 5, ["public"]) == ([], {"none_visible": 1})


def _answers(searcher: Searcher) -> list:
    """What every read path serves: each vector plan, full text, hybrid, and one document."""
    table = searcher.current()[0]
    if not table.list_indices():
        table.create_index("text", config=FTS())
    searcher.current(force=True)
    vector = _query(30, 7)
    answers = [
        *_search(searcher, vector, 10, ["public"]),
        *_search(searcher, vector, 10, None),
        *_search(searcher, vector, 5, ["public"], filters={"document_id": ["d10", "d11", "d500"]}),
        searcher.search("chunk 42", k=5, mode="fulltext", groups=["public", "finance"]),
        searcher.search("chunk 42", k=5, mode="hybrid", groups=["public"], vector=vector),
        searcher.document("d10", groups=["public", "finance", "rare"]),
    ]
    # The table's own version differs between the two layouts (one more write to migrate).
    return [[replace(h, table_version=0) for h in a] if isinstance(a, list) else a for a in answers]


def test_a_table_from_before_the_citation_column_is_served_alike_and_brought_up_to_date(tmp_path):
    """Hits read from the one ``citation`` column equal hits read from each field's own column, and the
    next sync gives an older table the column, from its own rows."""
    current = _answers(_searcher_over_new_table(tmp_path / "current"))
    older = _searcher_over_new_table(tmp_path / "older", citation_column=False)
    table = older.current()[0]
    assert CITATION_COLUMN not in table.schema.names
    assert _answers(older) == current
    assert current[0] and current[2] and current[4] and current[6]  # the comparison is over real hits

    migrated = open_or_create(older.db, table.name, DIM, EMBEDDER.model_id)
    assert CITATION_COLUMN in migrated.schema.names
    stored = migrated.to_arrow().sort_by("chunk_id")
    assert (
        stored[CITATION_COLUMN].to_pylist()
        == with_citations(stored.select(CITATION_FIELDS))[CITATION_COLUMN].to_pylist()
    )
    again = Searcher(older.db, "chunks", EMBEDDER)
    assert CITATION_COLUMN in again.state().columns and again.state().model_id == EMBEDDER.model_id
    assert _answers(again) == current


def test_a_row_without_its_citation_is_a_clear_error():
    found = pa.table({CITATION_COLUMN: pa.array([None], pa.string()), "text": ["t"]})
    with pytest.raises(LookupError, match="without its 'citation'"):
        _rows(found)
