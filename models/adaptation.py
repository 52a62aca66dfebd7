"""A domain-adapted embedder: the champion fine-tuned on question-like pairs mined from the gold chunks.

No human labels: each chunk gives one pair (a short query made of its heading and first sentence, the
chunk as the model embeds it), trained with in-batch negatives (MultipleNegativesRankingLoss) by
sentence-transformers' own trainer, fixed seeds, a bounded number of steps on CPU. Gold questions are
never training data (``overlap``). The result is a registry version whose weights are logged as MLflow
artifacts; promotion (``models.promotion.promote``) decides whether it serves.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from models.embedding_model import embedding_input, resolve_device

log = logging.getLogger(__name__)
ADAPTATION_EXPERIMENT = "groundwork-embedder-adaptation"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_MARKUP = re.compile(r"[#*`_>|\[\]]+")


@dataclass(frozen=True)
class AdaptationParams:
    """Training settings. ``max_steps`` bounds CPU training (GPU: 0 = one full epoch)."""

    learning_rate: float = 1e-5
    batch_size: int = 32
    epochs: int = 1
    warmup_ratio: float = 0.1
    max_steps: int = 60
    gpu_max_steps: int = 0
    max_pairs: int = 20000
    seed: int = 42

    def to_dict(self) -> dict:
        return asdict(self)


def _normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def short_query(title: str, heading_path: str, text: str, max_words: int = 24) -> str:
    """A question-like query for a chunk: its deepest heading (or title) and its first sentence."""
    heading = (heading_path or "").split(" > ")[-1].strip() or (title or "").strip()
    body = _MARKUP.sub(" ", text or "").strip()
    first = _SENTENCE.split(body, maxsplit=1)[0] if body else ""
    words = first.split()[:max_words]
    return " ".join(part for part in (heading, " ".join(words)) if part).strip()


def mine_pairs(chunks, gold_queries=(), max_pairs: int = 20000, seed: int = 42) -> list[tuple[str, str]]:
    """(query, passage) pairs from the corpus alone, one per chunk with enough text; any pair whose query
    equals a gold question is dropped. ``chunks`` is an Arrow table with title, heading_path and text."""
    import random

    gold = {_normalized(q) for q in gold_queries}
    pairs, seen = [], set()
    for title, heading, text in zip(
        chunks["title"].to_pylist(),
        chunks["heading_path"].to_pylist(),
        chunks["text"].to_pylist(),
        strict=True,
    ):
        if not text or len(text.split()) < 8:
            continue
        query = short_query(title or "", heading or "", text)
        if len(query.split()) < 3 or _normalized(query) in gold or query in seen:
            continue
        seen.add(query)
        pairs.append((query, embedding_input(title or "", heading or "", text)))
    random.Random(seed).shuffle(pairs)
    return pairs[:max_pairs]


def overlap(pairs, gold_queries) -> int:
    """How many gold questions are (normalized: lower case, no punctuation) a training query: 0 is
    required; the benchmark prints it."""
    gold = {_normalized(q) for q in gold_queries}
    texts = [_normalized(q) for q, _ in pairs]
    return sum(1 for g in gold if any(g == t for t in texts))


def fine_tune(
    base_path: str, pairs: list[tuple[str, str]], output: Path, params: AdaptationParams, device: str = "auto"
) -> dict:
    """Fine-tune the model at ``base_path`` on ``pairs`` and save it to ``output``; returns what was done
    (device, steps, seconds, final loss). Same device choice as embedding: CUDA when torch sees it."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers
    from transformers import set_seed

    if len(pairs) < 2:
        raise ValueError(f"only {len(pairs)} training pairs mined: not enough to fine-tune")
    device = resolve_device(device)
    set_seed(params.seed)
    torch.manual_seed(params.seed)
    model = SentenceTransformer(base_path, device=device, local_files_only=True)
    data = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    steps = params.gpu_max_steps if device.startswith("cuda") else params.max_steps
    output.mkdir(parents=True, exist_ok=True)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output / "checkpoints"),
        num_train_epochs=params.epochs,
        max_steps=steps if steps > 0 else -1,
        per_device_train_batch_size=min(params.batch_size, len(pairs)),
        learning_rate=params.learning_rate,
        warmup_ratio=params.warmup_ratio,
        seed=params.seed,
        data_seed=params.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # a duplicate in a batch is a false negative
        save_strategy="no",
        report_to="none",
        logging_steps=10,
        fp16=device.startswith("cuda"),
        use_cpu=not device.startswith("cuda"),
        dataloader_drop_last=len(pairs) > params.batch_size,
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=data, loss=MultipleNegativesRankingLoss(model)
    )
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    weights = output / "weights"
    model.save(str(weights))
    info = {
        "device": device,
        "steps": int(result.global_step),
        "train_seconds": round(seconds, 1),
        "train_loss": round(float(result.training_loss), 4),
        "pairs": len(pairs),
        "weights_path": str(weights),
    }
    log.info("fine-tuned %s on %d pairs: %s", base_path, len(pairs), info)
    return info


def adapt(
    tracking,
    lakehouse,
    base,
    output_root: Path,
    params: AdaptationParams,
    gold_queries=(),
    degrade: bool = False,
) -> tuple[str, dict]:
    """Mine pairs from the gold chunks, fine-tune ``base`` (an ``Embedder`` pinned to the champion) and
    register the result as a new version, weights logged as artifacts; returns (version, training info).

    ``degrade`` (tests only) shuffles the passages so the model learns wrong pairs: the gate must refuse it.
    """
    from models.model_registry import register_embedder

    chunks = lakehouse.read_arrow("document_chunks")
    gold_version = lakehouse.version("document_chunks") or 0
    pairs = mine_pairs(chunks, gold_queries, params.max_pairs, params.seed)
    if degrade:
        passages = [p for _, p in pairs]
        pairs = [(q, passages[(i + len(passages) // 2) % len(passages)]) for i, (q, _) in enumerate(pairs)]
    leaked = overlap(pairs, gold_queries)
    if leaked:
        raise ValueError(f"{leaked} gold questions are in the training pairs")
    folder = output_root / f"adapted-{int(time.time())}"
    info = fine_tune(base.path, pairs, folder, params, base.device)
    tags = {
        "groundwork.adapted.base_model": base.model_id,
        "groundwork.adapted.base_version": base.version,
        "groundwork.adapted.gold_table_version": str(gold_version),
        "groundwork.adapted.pairs": str(len(pairs)),
        "groundwork.adapted.gold_overlap": str(leaked),
        "groundwork.adapted.params": str(params.to_dict()),
        "groundwork.adapted.device": info["device"],
        "groundwork.adapted.steps": str(info["steps"]),
        "groundwork.adapted.train_seconds": str(info["train_seconds"]),
        "groundwork.adapted.train_loss": str(info["train_loss"]),
    }
    version = register_embedder(
        tracking,
        weights_path=info["weights_path"],
        weights_name=f"{base.model_name}-adapted",
        description=f"fine-tuned from {base.model_id} on {len(pairs)} mined pairs"
        + (" (degraded on purpose)" if degrade else ""),
    )
    mlflow = tracking.configure()
    with mlflow.start_run(
        experiment_id=tracking.experiment_id(ADAPTATION_EXPERIMENT), run_name=f"adapt-v{version}"
    ) as run:
        mlflow.set_tags({**tags, "registered_version": version})
        mlflow.log_params({f"train_{k}": v for k, v in params.to_dict().items()})
        mlflow.log_metrics({"train_seconds": info["train_seconds"], "train_loss": info["train_loss"]})
        mlflow.log_artifacts(info["weights_path"], artifact_path="weights")
    client = tracking.client()
    for key, value in {**tags, "groundwork.adapted.mlflow_run_id": run.info.run_id}.items():
        client.set_model_version_tag(tracking.embedding_model, version, key, value)
    return version, {**info, "mlflow_run_id": run.info.run_id, "gold_table_version": gold_version, **tags}
