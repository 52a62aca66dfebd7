"""Retrieval quality against a gold set: hit@k, recall@k, MRR@10 and nDCG@10, per search mode.

A gold file holds JSON lines ``{"query": "...", "relevant": ["path", ...]}`` with paths relative to the
landing folder of documents (what every chunk carries in ``path``). Metrics are per document: a ranked
list of chunks becomes the list of distinct documents in the order they first appear, so five chunks
of one document count once. hit@k is what a user feels (any relevant document in the top k); recall@k
is the fraction of the relevant documents found there. The Dagster asset, `groundwork eval`, promotion
and the benchmark all call ``evaluate``; only the search function differs.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

MODES = ("vector", "fulltext", "hybrid")
NDCG_CUTOFF = 10
MRR_CUTOFF = 10
# Chunks fetched per query: enough for k and 10 distinct documents when several chunks share one.
CHUNKS_PER_DOCUMENT = 4

# (query, number of chunks, mode) -> paths of the ranked chunks, best first
SearchFunction = Callable[[str, int, str], Sequence[str]]


@dataclass(frozen=True)
class GoldQuery:
    query: str
    relevant: tuple[str, ...]


def load_gold(path: str | Path) -> list[GoldQuery]:
    """Read a gold file; a malformed line is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gold file {path} does not exist")
    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected an object with query and relevant")
        query, relevant = record.get("query"), record.get("relevant")
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f'{path}:{number}: "query" must be a non-empty string')
        if not isinstance(relevant, list) or not relevant or not all(isinstance(p, str) for p in relevant):
            raise ValueError(f'{path}:{number}: "relevant" must be a non-empty list of paths')
        queries.append(GoldQuery(query.strip(), tuple(p.strip().lstrip("/") for p in relevant)))
    if not queries:
        raise ValueError(f"gold file {path} holds no queries")
    return queries


def distinct(paths: Iterable[str]) -> list[str]:
    """Documents in the order their first chunk appears."""
    seen: dict[str, None] = {}
    for p in paths:
        seen.setdefault(p, None)
    return list(seen)


def recall_at(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    relevant = set(relevant)
    return len(relevant & set(ranked[:k])) / len(relevant)


def hit_at(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """1.0 when any relevant document is among the first ``k``."""
    return 1.0 if set(relevant) & set(ranked[:k]) else 0.0


def reciprocal_rank(ranked: Sequence[str], relevant: Iterable[str], cutoff: int = MRR_CUTOFF) -> float:
    relevant = set(relevant)
    return next((1.0 / rank for rank, p in enumerate(ranked[:cutoff], start=1) if p in relevant), 0.0)


def ndcg_at(ranked: Sequence[str], relevant: Iterable[str], k: int = NDCG_CUTOFF) -> float:
    """Binary-relevance nDCG: gain 1 per relevant document, discounted by log2(rank + 1)."""
    relevant = set(relevant)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, p in enumerate(ranked[:k], start=1) if p in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


@dataclass(frozen=True)
class QueryResult:
    query: str
    relevant: tuple[str, ...]
    ranked: tuple[str, ...]
    recall: float
    reciprocal_rank: float
    ndcg: float
    hit: float = 0.0


@dataclass(frozen=True)
class ModeMetrics:
    mode: str
    k: int
    recall: float
    mrr: float
    ndcg: float
    queries: int
    per_query: list[QueryResult] = field(default_factory=list, compare=False)
    hit: float = 0.0

    def as_metrics(self) -> dict[str, float]:
        """Flat names that MLflow accepts (no ``@``): ``vector_recall_at_5``, ``vector_ndcg_at_10``."""
        return {
            f"{self.mode}_hit_at_{self.k}": self.hit,
            f"{self.mode}_recall_at_{self.k}": self.recall,
            f"{self.mode}_mrr_at_{MRR_CUTOFF}": self.mrr,
            f"{self.mode}_ndcg_at_{NDCG_CUTOFF}": self.ndcg,
        }

    def summary(self) -> dict:
        return {
            "mode": self.mode,
            f"hit@{self.k}": round(self.hit, 4),
            f"recall@{self.k}": round(self.recall, 4),
            f"mrr@{MRR_CUTOFF}": round(self.mrr, 4),
            f"ndcg@{NDCG_CUTOFF}": round(self.ndcg, 4),
            "queries": self.queries,
        }


def evaluate_mode(search: SearchFunction, gold: Sequence[GoldQuery], mode: str, k: int = 5) -> ModeMetrics:
    if k < 1:
        raise ValueError("k must be at least 1")
    depth = max(k, NDCG_CUTOFF, MRR_CUTOFF) * CHUNKS_PER_DOCUMENT
    results = []
    for item in gold:
        ranked = distinct(search(item.query, depth, mode))
        results.append(
            QueryResult(
                item.query,
                item.relevant,
                tuple(ranked[: max(k, NDCG_CUTOFF)]),
                recall_at(ranked, item.relevant, k),
                reciprocal_rank(ranked, item.relevant),
                ndcg_at(ranked, item.relevant),
                hit_at(ranked, item.relevant, k),
            )
        )
    n = len(results)
    return ModeMetrics(
        mode,
        k,
        sum(r.recall for r in results) / n,
        sum(r.reciprocal_rank for r in results) / n,
        sum(r.ndcg for r in results) / n,
        n,
        results,
        hit=sum(r.hit for r in results) / n,
    )


@dataclass(frozen=True)
class EvaluationReport:
    modes: dict[str, ModeMetrics]
    unknown_paths: list[str]

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in self.modes.values():
            out.update(m.as_metrics())
        return out

    def to_dict(self, per_query: bool = False) -> dict:
        out: dict = {"modes": {name: m.summary() for name, m in self.modes.items()}}
        out["unknown_relevant_paths"] = self.unknown_paths
        if per_query:
            out["per_query"] = {name: [asdict(q) for q in m.per_query] for name, m in self.modes.items()}
        return out


def evaluate(
    search: SearchFunction,
    gold: Sequence[GoldQuery],
    k: int = 5,
    modes: Sequence[str] = MODES,
    indexed_paths: set[str] | None = None,
) -> EvaluationReport:
    """Metrics for each mode; ``indexed_paths`` (when given) lists gold paths the index does not hold,
    which usually means a stale gold file or paths not relative to the landing folder."""
    unknown = (
        sorted({p for q in gold for p in q.relevant} - indexed_paths) if indexed_paths is not None else []
    )
    return EvaluationReport({mode: evaluate_mode(search, gold, mode, k) for mode in modes}, unknown)


def searcher_function(searcher) -> SearchFunction:
    """Adapt a ``serving.search.Searcher`` (the one way Groundwork searches) to ``evaluate``."""

    def search(query: str, n: int, mode: str) -> list[str]:
        return [hit.path for hit in searcher.search(query, k=n, mode=mode)]

    return search


def indexed_paths(table) -> set[str]:
    """Distinct document paths in a LanceDB chunk table."""
    return set(table.search().select(["path"]).limit(None).to_arrow()["path"].to_pylist())


EVALUATION_EXPERIMENT = "groundwork-retrieval-evaluation"


def log_to_mlflow(
    tracking,
    report: EvaluationReport,
    tags: dict[str, str],
    params: dict[str, object] | None = None,
    run_name: str = "retrieval-evaluation",
    experiment: str = EVALUATION_EXPERIMENT,
) -> str:
    """One MLflow run with every mode's metrics, ``tags`` (model and table versions) and the per-query
    rankings as a JSON artifact; returns the run id. ``tracking`` is an ``MLflowStore``."""
    mlflow = tracking.configure()
    with mlflow.start_run(experiment_id=tracking.experiment_id(experiment), run_name=run_name) as run:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})
        if params:
            mlflow.log_params(params)
        mlflow.log_metrics(report.metrics())
        mlflow.log_dict(report.to_dict(per_query=True), "evaluation.json")
    return run.info.run_id


@dataclass(frozen=True)
class RefusalCalibration:
    """The similarity threshold below which /answer refuses, and how it splits the two question sets."""

    threshold: float
    answerable_kept: float  # share of gold questions whose closest passage is at or above it
    unanswerable_refused: float  # share of questions the corpus cannot answer that fall below it
    answerable_min: float
    unanswerable_max: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def refusal_threshold(answerable: Sequence[float], unanswerable: Sequence[float]) -> RefusalCalibration:
    """The threshold on the closest passage's cosine similarity that best separates gold questions
    (answerable: their best similarity) from questions the corpus cannot answer: the one with the highest
    balanced accuracy, at the middle of the widest gap among equals (the most margin on both sides).
    Candidates are the midpoints between neighbouring observed similarities."""
    if not answerable or not unanswerable:
        raise ValueError("calibration needs answerable and unanswerable questions")
    values = sorted(set(answerable) | set(unanswerable))
    candidates = [(a + b) / 2 for a, b in itertools.pairwise(values)] or values

    def scores(t: float) -> tuple[float, float]:
        kept = sum(s >= t for s in answerable) / len(answerable)
        refused = sum(s < t for s in unanswerable) / len(unanswerable)
        return kept, refused

    def gap(t: float) -> float:
        below = max((v for v in values if v < t), default=t)
        above = min((v for v in values if v >= t), default=t)
        return above - below

    best = max(candidates, key=lambda t: (sum(scores(t)) / 2, gap(t)))
    kept, refused = scores(best)
    return RefusalCalibration(round(best, 2), kept, refused, min(answerable), max(unanswerable))
