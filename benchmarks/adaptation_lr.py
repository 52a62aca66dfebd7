"""The adapted embedder's learning rate, chosen on a held-out split of the mined pairs (hygiene: never on
the gold questions).

10 % of the Git docs' chunks are held out: their pairs are neither trained on nor used as negatives.
For each learning rate the champion is fine-tuned on the other pairs (same settings as the benchmark
otherwise) and scored by ``validation_mrr``: for each held-out query, the reciprocal rank of its page
among the pages of the nearest chunks of the whole corpus. The gold file is read only so that a gold
question is never a training query (``mine_pairs`` drops it).

    python -m benchmarks.adaptation_lr --corpus /tmp/gitdoc/usr/share/doc/git-doc 2e-5 5e-5 1e-4
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks._corpus import gold_table
from benchmarks.retrieval_quality import GOLD, groundwork_rows, load_corpus
from models.adaptation import AdaptationParams, fine_tune, mine_pairs, split_pairs, validation_mrr
from models.evaluation import load_gold
from resources.embedder import Embedder
from resources.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("learning_rates", type=float, nargs="+")
    parser.add_argument("--corpus", type=Path, default=Path("/usr/share/doc/git-doc"))
    parser.add_argument("--steps", type=int, default=AdaptationParams.max_steps)
    parser.add_argument("--held-out", type=float, default=0.1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    settings = Settings(home=Path(tempfile.gettempdir()) / "groundwork-bench")
    base = Embedder(device=args.device, batch_size=settings.embedding_batch_size)
    table = gold_table(groundwork_rows(load_corpus(args.corpus), settings, base.path))
    gold = [q.query for q in load_gold(GOLD)]
    held = split_pairs(table, args.held_out)
    train = mine_pairs(table, gold, exclude_chunks=held)
    others = frozenset(range(table.num_rows)) - held
    valid = mine_pairs(table, gold, hard_negatives=False, exclude_chunks=others)
    print(f"{len(train)} training pairs; {len(valid)} held-out pairs from {len(held)} chunks")
    print(json.dumps({"lr": None, "heldout_mrr10": round(validation_mrr(base.encode, table, valid), 4)}))
    for lr in args.learning_rates:
        params = AdaptationParams(learning_rate=lr, max_steps=args.steps, gpu_max_steps=args.steps)
        with tempfile.TemporaryDirectory() as folder:
            info = fine_tune(base.path, train, Path(folder), params, args.device)
            tuned = Embedder(model_path=info["weights_path"], model_version="lr", device=args.device)
            started = time.perf_counter()
            mrr = validation_mrr(tuned.encode, table, valid)
        print(
            json.dumps(
                {
                    "lr": lr,
                    "heldout_mrr10": round(mrr, 4),
                    "train_seconds": info["train_seconds"],
                    "train_loss": info["train_loss"],
                    "eval_seconds": round(time.perf_counter() - started),
                }
            )
        )


if __name__ == "__main__":
    main()
