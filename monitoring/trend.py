"""The evaluation trend: the newest retrieval evaluation against the champion's recorded baseline.

The baseline is the first evaluation recorded for the champion model on the same gold file (another gold
set's scores are not comparable); every later run of that model is compared with it, so a slow slide
is caught as well as a sudden drop. A promoted model starts its own baseline.
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


def compare_with_baseline(history: list[dict], tolerance: float, champion_model: str | None = None) -> Trend:
    """Fail when, in any search mode, MRR@10 or nDCG@10 of the newest run is more than ``tolerance`` below
    the baseline's. ``champion_model`` defaults to the model the newest run evaluated."""
    runs = _runs(history)
    if not runs:
        return Trend(False, False, "no evaluation recorded yet", {}, [], [])
    newest = runs[-1]
    model = champion_model or newest[0]["model_id"]
    gold = newest[0]["gold_sha256"]
    baseline = next((r for r in runs if r[0]["model_id"] == model and r[0]["gold_sha256"] == gold), None)
    if baseline is None or baseline is newest:
        return Trend(False, False, f"newest run is the baseline of {model}", {}, newest, newest)
    base_by_mode = {row["mode"]: row for row in baseline}
    figures: dict = {"tolerance": tolerance}
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
