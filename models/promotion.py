"""Eval-gated promotion of an embedding model, and rollback.

A candidate (a registry version) gets its own LanceDB table built beside the champion's, from the same
gold chunks; both are evaluated on the gold set in the same run, and ``champion`` (with the active
table pointer) moves to the candidate only if its nDCG@10 is at least the champion's minus the
tolerance. The decision and both scores go to an MLflow run and onto the candidate's version tags.
Rollback moves the alias and the pointer back together; searchers built afterwards follow at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING

from models.evaluation import (
    MODES,
    NDCG_CUTOFF,
    EvaluationReport,
    GoldQuery,
    ModeMetrics,
    evaluate,
    indexed_paths,
    log_to_mlflow,
    searcher_function,
)
from models.model_registry import (
    champion_version,
    model_info,
    previous_champion,
    resolve_embedder,
    set_champion,
)
from resources.embedder import Embedder
from resources.lakehouse import Lakehouse
from resources.lancedb import LanceDBStore
from resources.lancedb.sync import SyncResult, sync_embeddings
from resources.lancedb.tables import activate, model_table_name, table_model
from resources.quality import Quality
from resources.tracking import MLflowStore
from serving.search import Searcher

if TYPE_CHECKING:
    from quality.validation import ExpectationOutcome

PROMOTION_EXPERIMENT = "groundwork-model-promotion"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionDecision:
    candidate_version: str
    champion_version: str
    mode: str
    candidate_ndcg: float
    champion_ndcg: float
    tolerance: float
    promoted: bool
    candidate_table: str
    mlflow_run_id: str
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def build_model_table(
    embedder: Embedder,
    lancedb: LanceDBStore,
    lakehouse: Lakehouse,
    quality: Quality | None,
    *,
    model_info: dict,
    run_name: str,
    activate_new: bool,
    report: Callable[[str, ExpectationOutcome], None] | None = None,
) -> SyncResult:
    """Bring ``embedder``'s table in line with the gold chunks: the one way a model's table is built.

    A table that is not the active one (a first build, a new model) must pass the embeddings suite (with
    ``quality``) before it goes live (``activate_new``, the pipeline) or is kept as a candidate
    (promotion); ``report`` hears of each failed expectation. CandidateRejectedError otherwise.
    """
    gold = lakehouse.read_arrow("document_chunks")

    def validate(table) -> bool:
        from quality import suites  # Great Expectations (4-5 s of imports): only for a table that is new

        outcome = quality.validate(
            suites.embedding_frame(table),
            "chunk_embeddings_candidate",
            suites.chunk_embeddings_suite(gold.num_rows, embedder.dimension),
            run_name,
        )
        for failure in outcome.failed:
            (report or _log_failure)(table.name, failure)
        return outcome.success

    return sync_embeddings(
        lancedb.connect(),
        lancedb.table_name,
        gold,
        lakehouse.version("document_chunks") or 0,
        embedder.encode,
        lambda: embedder.dimension,  # loads the model: only when the table is new
        embedder.model_name,
        embedder.version,
        vector_index_min_rows=lancedb.vector_index_min_rows,
        keep_versions=timedelta(days=lancedb.keep_versions_days),
        validate=validate if quality is not None else None,
        activate_new=activate_new,
        model_info=model_info,
    )


def _log_failure(table_name: str, failure: ExpectationOutcome) -> None:
    log.error(
        "%s: %s(%s) observed %s",
        table_name,
        failure.expectation,
        failure.column,
        failure.observed_json()[:200],
    )


def build_table(
    embedder: Embedder,
    tracking: MLflowStore,
    lancedb: LanceDBStore,
    lakehouse: Lakehouse,
    quality: Quality | None = None,
) -> str:
    """A promotion's table for ``embedder``, built (not activated) beside the champion's; returns its name."""
    if not lakehouse.exists("document_chunks") or lakehouse.row_count("document_chunks") == 0:
        raise LookupError("no gold chunks (document_chunks) to embed: run `groundwork run` first")
    result = build_model_table(
        embedder,
        lancedb,
        lakehouse,
        quality,
        model_info=model_info(tracking, embedder),
        run_name=f"promotion-{embedder.model_id}",
        activate_new=False,
    )
    log.info("built %s: %d embedded, %d rows", result.table_name, result.embedded, result.rows)
    return result.table_name


def evaluate_table(
    embedder: Embedder, lancedb: LanceDBStore, table: str, gold: list[GoldQuery], k: int
) -> EvaluationReport:
    searcher = Searcher(lancedb.connect(), lancedb.table_name, embedder, physical=table)
    return evaluate(
        searcher_function(searcher), gold, k=k, modes=MODES, indexed_paths=indexed_paths(searcher.table)
    )


def promote(
    candidate: str,
    gold: list[GoldQuery],
    tracking: MLflowStore,
    lancedb: LanceDBStore,
    lakehouse: Lakehouse,
    template: Embedder,
    quality: Quality | None = None,
    tolerance: float = 0.0,
    mode: str = "vector",
    k: int = 5,
) -> PromotionDecision:
    """Build, evaluate and (only if it retrieves at least as well) promote registry version ``candidate``."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    champion = champion_version(tracking)
    candidate = str(candidate)
    if candidate == champion:
        raise ValueError(f"version {candidate} is already the champion")
    champion_model = resolve_embedder(tracking, template, version=champion)
    candidate_model = resolve_embedder(tracking, template, version=candidate)
    champion_table = build_table(champion_model, tracking, lancedb, lakehouse)  # usually nothing to do
    candidate_table = build_table(candidate_model, tracking, lancedb, lakehouse, quality)
    champion_report = evaluate_table(champion_model, lancedb, champion_table, gold, k)
    candidate_report = evaluate_table(candidate_model, lancedb, candidate_table, gold, k)
    champion_score = champion_report.modes[mode].ndcg
    candidate_score = candidate_report.modes[mode].ndcg
    promoted = candidate_score >= champion_score - tolerance
    decision = "promoted" if promoted else "refused"

    db = lancedb.connect()
    tags = {
        "decision": decision,
        "candidate_version": candidate,
        "champion_version": champion,
        "candidate_table": candidate_table,
        "candidate_table_version": db.open_table(candidate_table).version,
        "champion_table": champion_table,
        "champion_table_version": db.open_table(champion_table).version,
    }
    params = {"mode": mode, "k": k, "tolerance": tolerance, "queries": len(gold)}
    scored = EvaluationReport(
        {
            **{f"candidate_{m}": _renamed(r, f"candidate_{m}") for m, r in candidate_report.modes.items()},
            **{f"champion_{m}": _renamed(r, f"champion_{m}") for m, r in champion_report.modes.items()},
        },
        candidate_report.unknown_paths,
    )
    run_id = log_to_mlflow(
        tracking, scored, tags, params, run_name=f"promote-v{candidate}", experiment=PROMOTION_EXPERIMENT
    )
    client = tracking.client()
    for key, value in {
        "groundwork.promotion": decision,
        f"groundwork.{mode}_ndcg_at_{NDCG_CUTOFF}": f"{candidate_score:.4f}",
        "groundwork.promotion_run_id": run_id,
    }.items():
        client.set_model_version_tag(tracking.embedding_model, candidate, key, value)
    if promoted:
        set_champion(
            tracking, candidate, reason=f"promoted: nDCG@10 {candidate_score:.4f} vs {champion_score:.4f}"
        )
        activate(db, lancedb.table_name, candidate_table)
    log.info(
        "candidate v%s %s: %s nDCG@10 %.4f vs champion v%s %.4f (tolerance %.4f)",
        candidate,
        decision,
        mode,
        candidate_score,
        champion,
        champion_score,
        tolerance,
    )
    return PromotionDecision(
        candidate,
        champion,
        mode,
        candidate_score,
        champion_score,
        tolerance,
        promoted,
        candidate_table,
        run_id,
        candidate_report.metrics(),
        champion_report.metrics(),
    )


def _renamed(metrics: ModeMetrics, mode_name: str) -> ModeMetrics:
    return replace(metrics, mode=mode_name)


def rollback(tracking: MLflowStore, lancedb: LanceDBStore) -> tuple[str, str]:
    """Move ``champion`` and the active table back to the previous champion; returns (from, to) versions.

    The previous champion's table is kept from when it served; the next pipeline run brings it up to date
    with chunks that arrived since (incrementally), so the switch itself is instant.
    """
    current = champion_version(tracking)
    target = previous_champion(tracking)
    db = lancedb.connect()
    target_id = f"{tracking.embedding_model}@{target}"
    table_name = model_table_name(lancedb.table_name, target_id)
    if table_name not in db.list_tables().tables:
        raise LookupError(f"cannot roll back to v{target}: its LanceDB table {table_name} does not exist")
    if table_model(db.open_table(table_name)).get("model_id") != target_id:
        raise ValueError(f"{table_name} does not hold vectors of {target_id}")
    set_champion(tracking, target, reason=f"rollback from v{current}")
    activate(db, lancedb.table_name, table_name)
    return current, target
