"""A domain-adapted embedder: the champion fine-tuned on question-like pairs mined from the gold chunks.

No human labels: each chunk gives a few queries (its heading with its most specific words; some of its
sentences, removed from the passage they are paired with: inverse cloze), each with a hard negative
(the BM25-closest chunk of another page), trained with MultipleNegativesRankingLoss (the hard negative
plus in-batch negatives) by sentence-transformers' own trainer, fixed seeds, a bounded number of steps
on CPU. Gold questions are
never training data (``overlap``). The result is a registry version whose weights are logged as MLflow
artifacts; promotion (``models.promotion.promote``) decides whether it serves.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from models.embedding_model import embedding_input, import_torch, resolve_device

log = logging.getLogger(__name__)
ADAPTATION_EXPERIMENT = "groundwork-embedder-adaptation"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_MARKUP = re.compile(r"[#*`_>|\[\]]+")


@dataclass(frozen=True)
class AdaptationParams:
    """Training settings. ``max_steps`` bounds CPU training (GPU: ``gpu_max_steps``, 0 = one full epoch).

    ``queries_per_chunk``: one heading + keyphrase query and inverse-cloze sentences per chunk;
    ``hard_negatives``: each pair also carries the BM25-closest chunk of another page; ``max_seq_length``
    truncates passages while training only (the saved model keeps its own limit).
    """

    # lr chosen on the held-out 10 % of the Git docs' mined pairs (validation MRR@10 0.776 at 2e-5, 0.785
    # at 5e-5, 0.777 at 1e-4; 40 steps of 16): docs/benchmarks.md. 40 steps: ~1.5-5 min on 2 CPU cores.
    learning_rate: float = 5e-5
    batch_size: int = 16
    epochs: int = 1
    warmup_steps: int = 5
    max_steps: int = 40
    gpu_max_steps: int = 0
    max_pairs: int = 20000
    queries_per_chunk: int = 3
    hard_negatives: bool = True
    max_seq_length: int = 128
    seed: int = 42

    def to_dict(self) -> dict:
        return asdict(self)


class Pair(NamedTuple):
    """A training example: a query, the passage it came from, optionally a hard negative (another
    page's passage) and where the passage came from (its page, the chunk's position in the table)."""

    query: str
    positive: str
    negative: str = ""
    document: str = ""
    chunk: int = -1


_STOPWORDS_TEXT = """a an and are as at be but by can do does for from has have how i if in into is it its may
not of on or so that the then there these this to was were when which will with you your git"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
_TOKEN = re.compile(r"[a-z0-9][a-z0-9_\-]*")


def _normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS and len(t) > 1]


def _plain(text: str) -> str:
    return " ".join(_MARKUP.sub(" ", text or "").split())


def keyphrase_query(
    title: str, heading_path: str, text: str, document_frequency: Counter, chunks: int
) -> str:
    """The deepest heading (or title) and the chunk's four most specific words (tf-idf against the
    corpus): a keyword query, as users type them, that names what the passage is about."""
    heading = (heading_path or "").split(" > ")[-1].strip() or (title or "").strip()
    counts = Counter(_tokens(text))
    known = set(_tokens(heading))
    ranked = sorted(
        (t for t in counts if t not in known),
        key=lambda t: (-counts[t] * math.log(chunks / (1 + document_frequency[t])), t),
    )
    return " ".join([heading, *ranked[:4]]).strip()


def cloze_sentences(text: str, min_words: int = 5, max_words: int = 32) -> list[str]:
    """The chunk's sentences (as written) that can stand as a query: long enough to say something."""
    return [
        s.strip()
        for s in _SENTENCE.split(text or "")
        if min_words <= len(_plain(s).split()) <= max_words and s.strip() != (text or "").strip()
    ]


class BM25:
    """Okapi BM25 over the chunks (k1 1.2, b 0.75), in memory: mines hard negatives without an index."""

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75):
        import numpy as np

        tokenized = [_tokens(t) for t in texts]
        lengths = np.array([len(t) for t in tokenized], dtype=np.float32)
        average = float(lengths.mean()) if len(lengths) else 1.0
        postings: dict[str, dict[int, int]] = {}
        for i, tokens in enumerate(tokenized):
            for token, count in Counter(tokens).items():
                postings.setdefault(token, {})[i] = count
        self.size = len(texts)
        self._postings = {}
        for token, docs in postings.items():
            ids = np.fromiter(docs, dtype=np.int64, count=len(docs))
            tf = np.fromiter(docs.values(), dtype=np.float32, count=len(docs))
            idf = math.log(1 + (self.size - len(docs) + 0.5) / (len(docs) + 0.5))
            norm = tf + k1 * (1 - b + b * lengths[ids] / max(average, 1e-9))
            self._postings[token] = (ids, idf * tf * (k1 + 1) / norm)

    def scores(self, query: str):
        import numpy as np

        out = np.zeros(self.size, dtype=np.float32)
        for token in set(_tokens(query)):
            if token in self._postings:
                ids, weights = self._postings[token]
                out[ids] += weights
        return out


def mine_pairs(
    chunks,
    gold_queries=(),
    max_pairs: int = 20000,
    seed: int = 42,
    queries_per_chunk: int = 3,
    hard_negatives: bool = True,
    exclude_chunks: frozenset[int] = frozenset(),
) -> list[Pair]:
    """Training pairs from the corpus alone; any query equal to a gold question is dropped, and so is
    any query seen before (one passage per query).

    Per chunk: its heading with its four most specific words (passage: the chunk), then up to
    ``queries_per_chunk - 1`` of its sentences as inverse-cloze queries (passage: the chunk *without*
    that sentence, so the model must match meaning rather than copied words). With ``hard_negatives``
    each pair carries the chunk of another page that BM25 ranks highest for the query: what in-batch
    random negatives never teach. ``chunks`` is an Arrow table with title, heading_path and text (and
    path or document_id when present: "another page"); ``exclude_chunks`` (positions) are neither
    positives nor negatives (a held-out split).
    """
    import random

    rng = random.Random(seed)
    gold = {_normalized(q) for q in gold_queries}
    titles = [t or "" for t in chunks["title"].to_pylist()]
    headings = [h or "" for h in chunks["heading_path"].to_pylist()]
    texts = [t or "" for t in chunks["text"].to_pylist()]
    key = next((c for c in ("path", "document_id") if c in chunks.column_names), "title")
    documents = [str(d or "") for d in chunks[key].to_pylist()]
    passages = [embedding_input(t, h, x) for t, h, x in zip(titles, headings, texts, strict=True)]
    frequency: Counter = Counter()
    for text in texts:
        frequency.update(set(_tokens(text)))
    candidates: list[Pair] = []
    for i, (title, heading, text) in enumerate(zip(titles, headings, texts, strict=True)):
        if i in exclude_chunks or len(text.split()) < 8:
            continue
        found = [
            Pair(
                keyphrase_query(title, heading, text, frequency, len(texts)), passages[i], "", documents[i], i
            )
        ]
        sentences = cloze_sentences(text)
        rng.shuffle(sentences)
        for sentence in sentences[: max(0, queries_per_chunk - 1)]:
            rest = " ".join(text.replace(sentence, " ", 1).split())
            found.append(Pair(_plain(sentence), embedding_input(title, heading, rest), "", documents[i], i))
        candidates.extend(found[:queries_per_chunk])
    pairs, seen = [], set()
    for pair in candidates:
        normalized = _normalized(pair.query)
        if len(normalized.split()) < 3 or normalized in gold or normalized in seen:
            continue
        seen.add(normalized)
        pairs.append(pair)
    rng.shuffle(pairs)
    pairs = pairs[:max_pairs]
    if hard_negatives and pairs:
        import numpy as np

        index = BM25(texts)
        words = [set(_tokens(t)) for t in texts]
        allowed = np.array([i not in exclude_chunks for i in range(len(texts))])

        def different(i: int, j: int) -> bool:
            """Pages share sections (git-log's and git-shortlog's options): a copy is no negative."""
            return documents[j] != documents[i] and len(words[i] & words[j]) < 0.5 * len(words[i] | words[j])

        fallback = [i for i in range(len(texts)) if allowed[i]]
        with_negatives = []
        for pair in pairs:
            scores = index.scores(pair.query)
            ranked = [int(j) for j in np.argsort(-scores, kind="stable")[:50] if scores[j] > 0]
            # No other page shares a word with the query: any other page's chunk is still a negative.
            tail = rng.sample(fallback, min(len(fallback), 50))
            negative = next((j for j in ranked + tail if allowed[j] and different(pair.chunk, j)), None)
            if negative is not None:
                with_negatives.append(pair._replace(negative=passages[negative]))
        pairs = with_negatives
    return pairs


def split_pairs(chunks, fraction: float, seed: int = 42) -> frozenset[int]:
    """Chunk positions held out for validation (``fraction`` of them): their pairs are never trained on."""
    import random

    count = chunks.num_rows
    return frozenset(random.Random(seed + 1).sample(range(count), int(count * fraction)))


def validation_mrr(encode, chunks, pairs: list[Pair], cutoff: int = 10) -> float:
    """Held-out check without gold questions: for each held-out pair's query, the reciprocal rank of its
    page among the pages of the nearest chunks (the whole corpus, as the index holds it). ``encode``
    turns texts into unit vectors."""
    import numpy as np

    if not pairs:
        return 0.0
    key = next((c for c in ("path", "document_id") if c in chunks.column_names), "title")
    documents = [str(d or "") for d in chunks[key].to_pylist()]
    passages = [
        embedding_input(t or "", h or "", x or "")
        for t, h, x in zip(
            chunks["title"].to_pylist(),
            chunks["heading_path"].to_pylist(),
            chunks["text"].to_pylist(),
            strict=True,
        )
    ]
    index = np.asarray(encode(passages))
    queries = np.asarray(encode([p.query for p in pairs]))
    total = 0.0
    for pair, scores in zip(pairs, queries @ index.T, strict=True):
        ranked: list[str] = []
        for j in np.argsort(-scores):
            if documents[j] not in ranked:
                ranked.append(documents[j])
                if len(ranked) == cutoff:
                    break
        total += 1.0 / (ranked.index(pair.document) + 1) if pair.document in ranked else 0.0
    return total / len(pairs)


def overlap(pairs, gold_queries) -> int:
    """How many gold questions are (normalized: lower case, no punctuation) a training query: 0 is
    required; the benchmark prints it."""
    gold = {_normalized(q) for q in gold_queries}
    texts = {_normalized(p[0]) for p in pairs}
    return sum(1 for g in gold if g in texts)


def fine_tune(
    base_path: str,
    pairs: list[Pair] | list[tuple[str, str]],
    output: Path,
    params: AdaptationParams,
    device: str = "auto",
) -> dict:
    """Fine-tune the model at ``base_path`` on ``pairs`` and save it to ``output``; returns what was done
    (device, steps, seconds, final loss). Same device choice as embedding: CUDA when torch sees it."""
    import_torch()  # first, under the lock that the quality checks beside this step hold
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
    columns = {"anchor": [p[0] for p in pairs], "positive": [p[1] for p in pairs]}
    if all(len(p) > 2 and p[2] for p in pairs):  # MultipleNegativesRankingLoss's hard-negative column
        columns["negative"] = [p[2] for p in pairs]
    data = Dataset.from_dict(columns)
    saved_length = model.max_seq_length
    if params.max_seq_length:
        model.max_seq_length = params.max_seq_length
    steps = params.gpu_max_steps if device.startswith("cuda") else params.max_steps
    output.mkdir(parents=True, exist_ok=True)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output / "checkpoints"),
        num_train_epochs=params.epochs,
        max_steps=steps if steps > 0 else -1,
        per_device_train_batch_size=min(params.batch_size, len(pairs)),
        learning_rate=params.learning_rate,
        warmup_steps=params.warmup_steps,
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
    model.max_seq_length = saved_length
    weights = output / "weights"
    model.save(str(weights))
    info = {
        "device": device,
        "steps": int(result.global_step),
        "train_seconds": round(seconds, 1),
        "train_loss": round(float(result.training_loss), 4),
        "pairs": len(pairs),
        "hard_negatives": "negative" in columns,
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
    pairs = mine_pairs(
        chunks, gold_queries, params.max_pairs, params.seed, params.queries_per_chunk, params.hard_negatives
    )
    if degrade:
        passages = [p.positive for p in pairs]
        pairs = [
            p._replace(positive=passages[(i + len(passages) // 2) % len(passages)], negative=p.positive)
            for i, p in enumerate(pairs)
        ]
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
