"""Hybrid fusion ranks documents, not chunks: a page with many matching chunks cannot crowd others out."""

from serving.search import fuse_by_document


def _rows(*pairs: tuple[str, str]) -> list[dict]:
    return [{"chunk_id": chunk, "document_id": doc} for chunk, doc in pairs]


def test_many_chunks_of_one_page_do_not_push_out_the_next_page():
    vector = _rows(("a1", "A"), ("a2", "A"), ("a3", "A"), ("a4", "A"), ("b1", "B"), ("c1", "C"))
    fulltext = _rows(("a5", "A"), ("a6", "A"), ("a7", "A"), ("b2", "B"))
    fused = fuse_by_document(vector, fulltext)
    # Chunk-level RRF would rank seven chunks of A before any of B; per document, B is second in both.
    assert [row["document_id"] for row, _ in fused[:3]] == ["A", "B", "C"]
    assert fused[1][0]["chunk_id"] == "b2"  # B's best chunk: rank 4 in full-text beats rank 5 in vector
    assert {row["chunk_id"] for row, _ in fused} == {f"a{i}" for i in range(1, 8)} | {"b1", "b2", "c1"}


def test_results_go_round_by_round_best_chunk_of_each_document_first():
    vector = _rows(("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B"))
    fused = fuse_by_document(vector, [])
    assert [row["chunk_id"] for row, _ in fused] == ["a1", "b1", "a2", "b2"]
    scores = [score for _, score in fused]
    assert scores[0] > scores[1] == scores[2] == scores[3]  # never increasing down the list


def test_a_tie_keeps_the_first_lists_order():
    vector = _rows(("x1", "X"), ("y1", "Y"))
    fulltext = _rows(("y1", "Y"), ("x1", "X"))
    assert [row["document_id"] for row, _ in fuse_by_document(vector, fulltext)] == ["X", "Y"]
    assert [row["document_id"] for row, _ in fuse_by_document(fulltext, vector)] == ["Y", "X"]


def test_a_weight_on_one_list_lets_its_top_document_lead():
    vector = _rows(("x1", "X"), ("y1", "Y"))
    fulltext = _rows(("y2", "Y"))
    # Unweighted, Y (in both lists) leads; with the first list weighted 4 and k 1, X does: 4/2 > 4/3 + 1/2.
    assert [row["chunk_id"] for row, _ in fuse_by_document(vector, fulltext)] == ["y2", "x1", "y1"]
    weighted = fuse_by_document(vector, fulltext, rrf_k=1, weights=[4.0, 1.0])
    assert [row["chunk_id"] for row, _ in weighted] == ["x1", "y1", "y2"]


def test_no_candidates_means_no_results():
    assert fuse_by_document([], []) == []
