"""False-alarm and detection rates of the drift checks (docs/monitoring.md), over many random seeds.

False alarms: the current side is a resample of the reference data (no drift), so every alert is false.
Detection: the current side really moved. Each family is judged with the default settings
(the `monitor_*` settings), by the same functions the checks call.

- embeddings: the bundled samples' chunks (cut as the pipeline cuts them, embedded with the packaged
  model), split at random into a reference and a "new batch"; detection: a batch of chunks on another
  topic (``synthetic_corpus``: appliance service notes) mixed with nothing else.
- queries: the gold questions and paraphrase-free resamples of them; detection: the unanswerable set.
- structured data: transactions-like amounts (normal) and currencies; detection: amounts +0.5 sd.

    python -m benchmarks.drift [--seeds 200]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks._corpus import sample_chunks, synthetic_corpus
from monitoring.drift import categorical_drift, embedding_drift, numeric_drift
from resources.embedder import Embedder
from resources.settings import SAMPLES_DIR, Settings


def _questions(name: str) -> list[str]:
    lines = (SAMPLES_DIR / "gold" / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["query"] for line in lines if line.strip()]


def _rate(alerts: list[bool]) -> float:
    return round(float(np.mean(alerts)), 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args()
    s = Settings()
    embedding = dict(
        alpha=s.monitor_alpha, min_distance=s.monitor_embedding_min_distance, min_rows=s.monitor_min_rows
    )
    column = dict(alpha=s.monitor_alpha, psi_max=s.monitor_psi_max, min_rows=s.monitor_min_rows)
    embedder = Embedder()
    started = time.perf_counter()
    chunks = embedder.encode([c["text"] for c in sample_chunks()])
    other_topic = embedder.encode([c["text"] for c in synthetic_corpus(50, 4)])
    gold = embedder.encode(_questions("questions.jsonl"))
    unanswerable = embedder.encode(_questions("unanswerable.jsonl"))
    embed_seconds = time.perf_counter() - started

    results: dict[str, dict] = {}
    false_alarms, detected = [], []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(chunks))
        n_new = max(s.monitor_min_rows, len(chunks) // 4)
        new, reference = chunks[order[:n_new]], chunks[order[n_new:]]
        false_alarms.append(embedding_drift(reference, new, seed=seed, **embedding).alert)
        batch = other_topic[rng.choice(len(other_topic), n_new, replace=False)]
        detected.append(embedding_drift(reference, batch, seed=seed, **embedding).alert)
    results["embeddings"] = {
        "chunks": len(chunks),
        "new_batch": n_new,
        "false_alarm_rate": _rate(false_alarms),
        "detection_rate": _rate(detected),
    }

    false_alarms, detected = [], []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        reference = gold[rng.choice(len(gold), 3 * s.monitor_min_rows)]
        same = gold[rng.choice(len(gold), s.monitor_min_rows)]
        moved = unanswerable[rng.choice(len(unanswerable), s.monitor_min_rows)]
        false_alarms.append(embedding_drift(reference, same, seed=seed, **embedding).alert)
        detected.append(embedding_drift(reference, moved, seed=seed, **embedding).alert)
    results["query_centroid"] = {
        "reference_queries": 3 * s.monitor_min_rows,
        "day_queries": s.monitor_min_rows,
        "false_alarm_rate": _rate(false_alarms),
        "detection_rate": _rate(detected),
    }

    for name, shift in (("numeric", 0.5), ("categorical", None)):
        false_alarms, detected = [], []
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            if shift is not None:
                reference, same = rng.normal(50, 10, 7 * 150), rng.normal(50, 10, 150)
                moved = rng.normal(50 + shift * 10, 10, 150)
                judge = numeric_drift
            else:
                mix, moved_mix = [0.5, 0.3, 0.2], [0.3, 0.3, 0.4]
                reference = rng.choice(["USD", "EUR", "GBP"], 7 * 150, p=mix)
                same = rng.choice(["USD", "EUR", "GBP"], 150, p=mix)
                moved = rng.choice(["USD", "EUR", "GBP"], 150, p=moved_mix)
                judge = categorical_drift
            false_alarms.append(judge(list(reference), list(same), **column).alert)
            detected.append(judge(list(reference), list(moved), **column).alert)
        results[f"data_{name}"] = {
            "reference_rows": 7 * 150,
            "day_rows": 150,
            "shift": "+0.5 sd" if shift is not None else "USD 50→30%, GBP 20→40%",
            "false_alarm_rate": _rate(false_alarms),
            "detection_rate": _rate(detected),
        }
    print(json.dumps({"seeds": args.seeds, "embed_seconds": round(embed_seconds, 1), **results}, indent=2))


if __name__ == "__main__":
    main()
