"""Hybrid fusion's parameters chosen on hand-written held-out questions, then the gold set measured once.

Issue 22 allows fusion weights only when they are chosen on held-out questions, never on the test ones.
``benchmarks/gold/git-doc-heldout.jsonl`` holds 46 questions written by hand from the same 68 pages as
``retrieval_quality`` indexes, phrased as a user would ask, none of them a gold question (checked here).
The champion's chunks are indexed as ``retrieval_quality`` indexes them; each question's vector and
full-text candidates (``HYBRID_CANDIDATES`` chunks each, as ``Searcher`` fetches them) are fused by
``fuse_by_document`` itself, over a grid of the RRF constant and the full-text weight.
The best pair on the held-out questions (hit@5, then MRR@10) is then measured on the gold set beside
the product's default (k 60, weight 1).

    python -m benchmarks.fusion_choice [--corpus /usr/share/doc/git-doc]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.retrieval_quality import GOLD, groundwork_rows, indexed_searcher, load_corpus
from models.evaluation import load_gold
from resources.embedder import Embedder
from resources.settings import Settings
from serving.search import HYBRID_CANDIDATES, RRF_K, fuse_by_document

HELD_OUT = GOLD.with_name("git-doc-heldout.jsonl")
RRF_CONSTANTS = (1, 5, 10, 20, 40, 60)
FULLTEXT_WEIGHTS = (0.5, 0.75, 1.0, 1.5, 2.0)


def documents(rows: list[dict]) -> list[str]:
    """Pages in the order of their best chunk."""
    return list(dict.fromkeys(row["path"] for row in rows))


def fused(vector: list[dict], fulltext: list[dict], rrf_k: int, fulltext_weight: float) -> list[str]:
    """Pages in the order ``fuse_by_document`` puts them, with a weight on the full-text list."""
    return documents(
        [row for row, _ in fuse_by_document(vector, fulltext, rrf_k=rrf_k, weights=[1.0, fulltext_weight])]
    )


def hit_and_mrr(ranked: dict[str, list[str]], questions) -> tuple[float, float]:
    hits = reciprocal = 0.0
    for q in questions:
        ranks = [i for i, page in enumerate(ranked[q.query][:10], start=1) if page in q.relevant]
        hits += bool(ranks) and ranks[0] <= 5
        reciprocal += 1 / ranks[0] if ranks else 0.0
    return hits / len(questions), reciprocal / len(questions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/usr/share/doc/git-doc"))
    args = parser.parse_args()

    gold, held_out = load_gold(GOLD), load_gold(HELD_OUT)
    shared = {q.query.strip().lower() for q in gold} & {q.query.strip().lower() for q in held_out}
    print(f"held-out: {len(held_out)} questions, gold: {len(gold)}; in both: {len(shared)} (must be 0)")
    embedder = Embedder(device="cpu")
    settings = Settings(home=Path(tempfile.gettempdir()) / "groundwork-bench")
    rows = groundwork_rows(load_corpus(args.corpus), settings, embedder.path)
    with indexed_searcher(rows, embedder) as searcher:

        def candidates(questions) -> dict[str, tuple[list[dict], list[dict]]]:
            return {
                q.query: tuple(
                    [hit.to_dict() for hit in searcher.search(q.query, k=HYBRID_CANDIDATES, mode=mode)]
                    for mode in ("vector", "fulltext")
                )
                for q in questions
            }

        held_lists, gold_lists = candidates(held_out), candidates(gold)

    def measure(lists, questions, rrf_k: int, weight: float) -> tuple[float, float]:
        return hit_and_mrr({q: fused(v, f, rrf_k, weight) for q, (v, f) in lists.items()}, questions)

    for index, mode in enumerate(("vector", "fulltext")):
        hit, mrr = hit_and_mrr({q: documents(lists[index]) for q, lists in held_lists.items()}, held_out)
        print(f"held-out {mode:<9} hit@5 {hit:.3f}  MRR@10 {mrr:.3f}")
    grid = {(k, w): measure(held_lists, held_out, k, w) for k in RRF_CONSTANTS for w in FULLTEXT_WEIGHTS}
    for (k, w), (hit, mrr) in sorted(grid.items(), key=lambda item: (-item[1][0], -item[1][1])):
        print(f"held-out hybrid  k {k:<3} full-text weight {w:<5} hit@5 {hit:.3f}  MRR@10 {mrr:.3f}")
    chosen = max(grid, key=lambda key: grid[key])
    default = (RRF_K, 1.0)
    print(f"chosen on the held-out questions: k {chosen[0]}, full-text weight {chosen[1]}")
    for label, (k, w) in (("chosen", chosen), ("default", default)):
        held_hit, held_mrr = grid[(k, w)]
        hit, mrr = measure(gold_lists, gold, k, w)
        print(
            f"{label:<8} (k {k}, weight {w}): held-out hit@5 {held_hit:.3f} MRR@10 {held_mrr:.3f}; "
            f"gold hit@5 {hit:.3f} MRR@10 {mrr:.3f}"
        )


if __name__ == "__main__":
    main()
