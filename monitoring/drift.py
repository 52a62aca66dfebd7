"""Drift tests: a current sample against a reference sample, judged by an effect size and a two-sample test.

An alert needs both: the effect above its minimum (what matters in practice) and the test's p-value under
alpha (what is unlikely to be chance). A large sample alone makes tiny shifts significant; a small one
makes large-looking shifts chance; requiring both keeps the false-alarm rate low (benchmarks/drift.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from models.embedding_model import torch_import_excluded

EMBEDDING_METHOD = (
    "cosine distance between the centroids of the current and reference vectors; Kolmogorov-Smirnov "
    "two-sample test on each vector's cosine similarity to the centroid of half the reference sample, "
    "the other half being the reference side (so neither side was used to place the centroid)"
)
NUMERIC_METHOD = "population stability index on the reference deciles; Kolmogorov-Smirnov two-sample test"
CATEGORICAL_METHOD = "population stability index on the categories; chi-square test of the counts"


@dataclass(frozen=True)
class Drift:
    """One drift judgement: ``alert`` when the effect is over its minimum and the test significant;
    ``judged`` is False when either side had too few rows (then it never alerts)."""

    alert: bool
    judged: bool
    effect: float
    p_value: float
    n_reference: int
    n_current: int
    method: str
    detail: str = ""
    # What to draw: the two samples of the statistic the test compared.
    reference_values: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    current_values: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    def figures(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}effect": round(float(self.effect), 6),
            f"{prefix}p_value": float(self.p_value),
            f"{prefix}n_reference": self.n_reference,
            f"{prefix}n_current": self.n_current,
        }


def _unjudged(n_reference: int, n_current: int, method: str, min_rows: int) -> Drift:
    detail = f"too few rows to judge ({n_reference} reference, {n_current} current; needs {min_rows} each)"
    return Drift(False, False, 0.0, 1.0, n_reference, n_current, method, detail)


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1, norms)


def centroid_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity of the two samples' mean vectors."""
    ca, cb = _unit(a).mean(axis=0), _unit(b).mean(axis=0)
    denominator = np.linalg.norm(ca) * np.linalg.norm(cb)
    return float(1 - ca @ cb / denominator) if denominator else 0.0


def embedding_drift(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    alpha: float = 0.01,
    min_distance: float = 0.05,
    min_rows: int = 20,
    seed: int = 0,
) -> Drift:
    """Have ``current`` vectors (new chunks, a day's queries) moved away from the ``reference`` sample?"""
    n_ref, n_cur = len(reference), len(current)
    if n_ref < 2 * min_rows or n_cur < min_rows:
        return _unjudged(n_ref, n_cur, EMBEDDING_METHOD, min_rows)
    reference, current = _unit(reference), _unit(current)
    order = np.random.default_rng(seed).permutation(n_ref)
    placing, held_out = reference[order[: n_ref // 2]], reference[order[n_ref // 2 :]]
    centre = placing.mean(axis=0)
    centre /= np.linalg.norm(centre) or 1
    ref_sims, cur_sims = held_out @ centre, current @ centre
    with torch_import_excluded():  # scipy's array checks look torch up
        p_value = float(stats.ks_2samp(ref_sims, cur_sims).pvalue)
    distance = centroid_distance(reference, current)
    alert = distance > min_distance and p_value < alpha
    detail = (
        f"centroid distance {distance:.4f} (alerts over {min_distance}), KS p {p_value:.3g} (alpha {alpha})"
    )
    return Drift(alert, True, distance, p_value, n_ref, n_cur, EMBEDDING_METHOD, detail, ref_sims, cur_sims)


def psi(reference_shares: np.ndarray, current_shares: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index: sum over bins of (current - reference) * ln(current / reference)."""
    r = np.clip(np.asarray(reference_shares, dtype=float), floor, None)
    c = np.clip(np.asarray(current_shares, dtype=float), floor, None)
    return float(np.sum((c - r) * np.log(c / r)))


def numeric_drift(
    reference: Sequence[float],
    current: Sequence[float],
    *,
    alpha: float = 0.01,
    psi_max: float = 0.2,
    min_rows: int = 20,
) -> Drift:
    """A numeric column: PSI over the reference's deciles, and the KS test."""
    ref = np.asarray([v for v in reference if v is not None], dtype=float)
    cur = np.asarray([v for v in current if v is not None], dtype=float)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if len(ref) < min_rows or len(cur) < min_rows:
        return _unjudged(len(ref), len(cur), NUMERIC_METHOD, min_rows)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)[1:-1]))
    ref_shares = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    cur_shares = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) / len(cur)
    index = psi(ref_shares, cur_shares)
    with torch_import_excluded():
        p_value = float(stats.ks_2samp(ref, cur).pvalue)
    alert = index > psi_max and p_value < alpha
    detail = f"PSI {index:.4f} (alerts over {psi_max}), KS p {p_value:.3g} (alpha {alpha})"
    return Drift(alert, True, index, p_value, len(ref), len(cur), NUMERIC_METHOD, detail, ref, cur)


def categorical_drift(
    reference: Sequence[object],
    current: Sequence[object],
    *,
    alpha: float = 0.01,
    psi_max: float = 0.2,
    min_rows: int = 20,
) -> Drift:
    """A categorical column (missing values are a category of their own): PSI and the chi-square test."""
    ref, cur = (
        ["∅" if v is None else str(v) for v in reference],
        ["∅" if v is None else str(v) for v in current],
    )
    if len(ref) < min_rows or len(cur) < min_rows:
        return _unjudged(len(ref), len(cur), CATEGORICAL_METHOD, min_rows)
    categories = sorted(set(ref) | set(cur))
    ref_counts = np.array([ref.count(c) for c in categories], dtype=float)
    cur_counts = np.array([cur.count(c) for c in categories], dtype=float)
    index = psi(ref_counts / len(ref), cur_counts / len(cur))
    if len(categories) < 2:
        p_value = 1.0
    else:
        with torch_import_excluded():
            p_value = float(stats.chi2_contingency(np.vstack([ref_counts, cur_counts]))[1])
    alert = index > psi_max and p_value < alpha
    detail = f"PSI {index:.4f} (alerts over {psi_max}), chi-square p {p_value:.3g} (alpha {alpha})"
    codes = {c: i for i, c in enumerate(categories)}
    return Drift(
        alert,
        True,
        index,
        p_value,
        len(ref),
        len(cur),
        CATEGORICAL_METHOD,
        detail,
        np.array([codes[v] for v in ref], dtype=float),
        np.array([codes[v] for v in cur], dtype=float),
    )


def unanswered_rate(best_similarities: Sequence[float | None], threshold: float) -> tuple[float, int]:
    """Share of queries whose best similarity is under the "no relevant source" threshold, and how many
    queries had one (a query with no similarity recorded is left out)."""
    known = [s for s in best_similarities if s is not None]
    if not known:
        return 0.0, 0
    return float(np.mean(np.asarray(known) < threshold)), len(known)
