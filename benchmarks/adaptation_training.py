"""Training time of the adapted embedder on this machine's device, CPU or GPU (issue 22 reports both).

Times ``models.adaptation.fine_tune`` exactly as the ``adapted_embedder`` asset runs it, on a pairs file
that ``benchmarks.retrieval_quality --save-pairs FILE`` writes (the Git docs' mined pairs, so a GPU
machine without the corpus, Spark or the pipeline can run it): the bounded CPU default (``--steps``,
40 steps of 16) and, with ``--epoch``, one full epoch over the pairs (what the asset does on a GPU).

    python -m benchmarks.adaptation_training --pairs pairs.json.gz [--base MODEL_DIR] [--device auto]
        [--steps 40] [--epoch]

Prints one line per run: device, steps, pairs, seconds, pairs/s and the final loss.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from models.adaptation import AdaptationParams, Pair, fine_tune


def load_pairs(path: Path) -> list[Pair]:
    """Pairs saved as JSON lists (``[query, positive, negative, document, chunk]``), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [Pair(*row) for row in json.load(handle)]


def save_pairs(pairs: list[Pair], path: Path) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        json.dump([list(p) for p in pairs], handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--base", default="", help="the base model's folder (default: the packaged one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=AdaptationParams.max_steps)
    parser.add_argument("--epoch", action="store_true", help="also one full epoch over the pairs")
    args = parser.parse_args()

    if not args.base:
        from models.embedding_model import packaged_model_path

        args.base = str(packaged_model_path())
    pairs = load_pairs(args.pairs)
    runs = [("bounded", replace(AdaptationParams(), max_steps=args.steps, gpu_max_steps=args.steps))]
    if args.epoch:
        runs.append(("one epoch", replace(AdaptationParams(), max_steps=0, gpu_max_steps=0)))
    for name, params in runs:
        with tempfile.TemporaryDirectory() as folder:
            info = fine_tune(args.base, pairs, Path(folder), params, args.device)
        trained = info["steps"] * params.batch_size
        print(
            f"{name}: {info['steps']} steps of {params.batch_size} on {info['device']} over "
            f"{len(pairs)} pairs: {info['train_seconds']:.1f} s ({trained / info['train_seconds']:.1f} "
            f"pairs/s), loss {info['train_loss']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
