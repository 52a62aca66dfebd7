"""Calibrates ``GROUNDWORK_ANSWER_MIN_SIMILARITY``, the similarity below which /answer says the sources
do not contain the answer, on the bundled gold set.

The sample documents are chunked and embedded as the pipeline does (``benchmarks._corpus.sample_chunks``,
``sync_embeddings``, the packaged model) and searched with ``serving.search.Searcher`` in vector mode,
as the service measures relevance. Answerable: the gold questions (``data/samples/gold/questions.jsonl``);
unanswerable: questions the corpus does not cover (``data/samples/gold/unanswerable.jsonl``). The
threshold is ``models.evaluation.refusal_threshold`` of the two lists of best similarities.

    python -m benchmarks.refusal_threshold
"""

from __future__ import annotations

import json
import tempfile

import lancedb

from benchmarks._corpus import gold_table, sample_chunks
from models.evaluation import load_gold, refusal_threshold
from resources.embedder import Embedder
from resources.lancedb.sync import sync_embeddings
from resources.settings import SAMPLES_DIR, Settings
from serving.search import Searcher

UNANSWERABLE = SAMPLES_DIR / "gold" / "unanswerable.jsonl"


def best_similarities(searcher: Searcher, questions: list[str]) -> list[float]:
    return [searcher.search(q, k=1, mode="vector")[0].score for q in questions]


def main() -> None:
    settings = Settings()
    embedder = Embedder()
    with tempfile.TemporaryDirectory() as folder:
        db = lancedb.connect(folder)
        sync_embeddings(
            db, "chunks", gold_table(sample_chunks()), 1, embedder.encode, embedder.dimension,
            embedder.model_name, embedder.version,
        )  # fmt: skip
        searcher = Searcher(db, "chunks", embedder)
        answerable = best_similarities(searcher, [g.query for g in load_gold(settings.eval_gold_file)])
        lines = UNANSWERABLE.read_text(encoding="utf-8").splitlines()
        unanswerable = best_similarities(
            searcher, [json.loads(line)["query"] for line in lines if line.strip()]
        )
    calibration = refusal_threshold(answerable, unanswerable)
    print(json.dumps({
        "model": embedder.model_id,
        "answerable": sorted(round(s, 3) for s in answerable),
        "unanswerable": sorted(round(s, 3) for s in unanswerable),
        **calibration.to_dict(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
