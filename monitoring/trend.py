"""The evaluation trend: the newest retrieval evaluation against the champion's recorded baseline.

The baseline is the first evaluation recorded for the champion model on the same gold file (another gold
set's scores are not comparable); every later run of that model is compared with it, so a slow slide
is caught as well as a sudden drop. A new model's first run (a new index version the pipeline just
activated) is compared with the previous champion's baseline, and becomes its model's baseline only if
it passed: a run the check rejected is never a baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

TREND_METRICS = ("mrr", "ndcg")
METRIC_NAMES = {"mrr": "MRR@10", "ndcg": "nDCG@10"}


@dataclass(frozen=True)
class Trend:
    failed: bool
    judged: bool
    summary: str
    figures: dict
    newest: list[dict]
    baseline: list[dict]


def _runs(history: list[dict]) -> list[list[dict]]:
    """History rows grouped by evaluation run (their MLflow run), oldest first."""
    runs: dict[str, list[dict]] = {}
    for row in history:
        runs.setdefault(row["mlflow_run_id"] or str(row["evaluated_at"]), []).append(row)
    return sorted(runs.values(), key=lambda rows: rows[0]["evaluated_at"])


def _baseline(runs: list[list[dict]], rejected: set[str]) -> list[dict] | None:
    """The first accepted run of the newest run's model on its gold file; for a model without one, that
    of the model evaluated before it (the champion the new index version would replace)."""
    newest = runs[-1]
    gold = newest[0]["gold_sha256"]
    accepted = [r for r in runs[:-1] if r[0]["gold_sha256"] == gold and r[0]["mlflow_run_id"] not in rejected]
    own = [r for r in accepted if r[0]["model_id"] == newest[0]["model_id"]]
    if own:
        return own[0]
    if not accepted:
        return None
    previous_model = accepted[-1][0]["model_id"]
    return next(r for r in accepted if r[0]["model_id"] == previous_model)


def compare_with_baseline(history: list[dict], tolerance: float, rejected: set[str] | None = None) -> Trend:
    """Fail when, in any search mode, MRR@10 or nDCG@10 of the newest run is more than ``tolerance`` below
    the baseline's. ``rejected``: MLflow run ids of runs this check failed before (never baselines)."""
    runs = _runs(history)
    if not runs:
        return Trend(False, False, "no evaluation recorded yet", {}, [], [])
    newest = runs[-1]
    baseline = _baseline(runs, rejected or set())
    if baseline is None:
        model = newest[0]["model_id"]
        return Trend(False, False, f"newest run is the baseline of {model}", {}, newest, newest)
    base_by_mode = {row["mode"]: row for row in baseline}
    figures: dict = {
        "tolerance": tolerance,
        "newest_run": newest[0]["mlflow_run_id"],
        "baseline_run": baseline[0]["mlflow_run_id"],
        "baseline_model": baseline[0]["model_id"],
    }
    drops = []
    for row in newest:
        base = base_by_mode.get(row["mode"])
        if base is None:
            continue
        for metric in TREND_METRICS:
            change = row[metric] - base[metric]
            figures[f"{row['mode']}_{metric}"] = round(row[metric], 4)
            figures[f"{row['mode']}_{metric}_baseline"] = round(base[metric], 4)
            figures[f"{row['mode']}_{metric}_change"] = round(change, 4)
            if change < -tolerance:
                drops.append(f"{row['mode']} {METRIC_NAMES[metric]} {base[metric]:.4f} → {row[metric]:.4f}")
    figures["worst_change"] = min((v for k, v in figures.items() if k.endswith("_change")), default=0.0)
    summary = (
        f"dropped beyond {tolerance}: " + "; ".join(drops)
        if drops
        else f"within {tolerance} of the baseline (worst change {figures['worst_change']:+.4f})"
    )
    return Trend(bool(drops), True, summary, figures, newest, baseline)
