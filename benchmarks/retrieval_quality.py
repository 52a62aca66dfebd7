"""Retrieval quality on a public corpus nobody on this project wrote: Git's HTML documentation.

The corpus is 68 pages of Debian's ``git-doc`` package (Git 2.39): the main porcelain commands, a few
ancillary ones and the guides (``CORPUS_FILES``; ``git-config.html``, 256 kB of option tables, and the
plumbing pages are left out to keep the run within minutes on 2 cores). The gold set,
``benchmarks/gold/git-doc.jsonl``, was written by hand from the pages: 48 questions phrased as a user
would ask them, mostly without the command's name, each with the page(s) that answer it.

Measured in the same run, with the same model (all-MiniLM-L6-v2, packaged) and the same metric code
as `groundwork eval` (``models/evaluation.py``):
- naive: the parsed text cut into fixed 1,000-character chunks, exact cosine search, no title;
- Groundwork vector, full-text and hybrid: the pipeline's own functions without Spark around them
  (``parse_document`` as bronze does, ``redact`` and ``Chunker`` as ``document_chunks`` does,
  ``sync_embeddings`` as ``chunk_embeddings`` does) and ``serving.search.Searcher``;
- adapted: the same pipeline with the champion fine-tuned on pairs mined from these chunks
  (``models.adaptation``, as the ``adapted_embedder`` asset trains it: heading + keyphrase and
  inverse-cloze queries, BM25 hard negatives from other pages); the overlap of the training pairs with
  the gold questions (must be 0) and the training time are printed.

    apt-get install git-doc     # or: apt-get download git-doc && dpkg-deb -x git-doc_*.deb DIR
    python -m benchmarks.retrieval_quality [--corpus /usr/share/doc/git-doc] [--device auto|cpu|cuda]
        [--adapt-steps 40] [--learning-rate 5e-5] [--batch-size 16] [--warmup-steps 5]
        [--max-seq-length 128] [--queries-per-chunk 3] [--no-hard-negatives] [--no-adapted]
        [--save-pairs pairs.json.gz]

Targets: the best mode beats naive by >= 0.10 in MRR@10 with hit@5 >= 0.95; hybrid >= max(vector,
full-text).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lancedb
import numpy as np

from assets.chunks.chunking import Chunker
from assets.chunks.redaction import redact
from assets.documents.parsing import parse_document
from assets.documents.transform import document_id
from benchmarks._corpus import _row, gold_table
from benchmarks.adaptation_training import save_pairs
from models.adaptation import AdaptationParams, fine_tune, mine_pairs, overlap
from models.evaluation import MODES, EvaluationReport, evaluate, indexed_paths, load_gold, searcher_function
from resources.embedder import Embedder
from resources.lancedb.sync import sync_embeddings
from resources.settings import Settings
from serving.search import Searcher

GOLD = Path(__file__).resolve().parent / "gold" / "git-doc.jsonl"
NAIVE_CHUNK_CHARS = 1000
_MAIN_PORCELAIN = (
    "add am archive bisect branch bundle checkout cherry-pick citool clean clone commit describe diff fetch "
    "format-patch gc grep gui init log maintenance merge mv notes pull push range-diff rebase reset restore "
    "revert rm shortlog show sparse-checkout stash status submodule switch tag worktree"
)
_ANCILLARY = "apply blame cherry difftool fsck mergetool prune reflog remote request-pull rerere send-email"
_GUIDES = (
    "gitattributes gitcli gitcredentials giteveryday gitfaq gitglossary githooks gitignore gitmailmap "
    "gitmodules gitrevisions gitsubmodules gittutorial gitworkflows"
)
CORPUS_FILES = sorted(
    [f"git-{name}.html" for name in (_MAIN_PORCELAIN + " " + _ANCILLARY).split()]
    + [f"{name}.html" for name in _GUIDES.split()]
)


def load_corpus(root: Path) -> dict[str, tuple[str, str]]:
    """Relative path -> (title, text) as bronze parses it."""
    missing = [name for name in CORPUS_FILES if not (root / name).is_file()]
    if missing:
        raise SystemExit(
            f"{root} lacks {len(missing)} corpus files (e.g. {missing[0]}): apt-get install git-doc"
        )
    out = {}
    for name in CORPUS_FILES:
        doc = parse_document(name, (root / name).read_bytes())
        if doc.error:
            raise SystemExit(f"{name}: {doc.error}")
        out[name] = (doc.title, doc.text)
    return out


def groundwork_rows(corpus: dict[str, tuple[str, str]], settings: Settings, model_path: str) -> list[dict]:
    """Chunks exactly as ``document_chunks`` cuts them: redaction first, then the token-bounded chunker."""
    chunker = Chunker(model_path, settings.chunk_max_tokens, settings.chunk_overlap_tokens)
    rows = []
    for path, (title, text) in corpus.items():
        doc_id = document_id(path)
        clean_title, clean_text = redact(title).text, redact(text).text
        for c in chunker.chunk(doc_id, clean_title, clean_text, paged=False):
            rows.append(_row(c.chunk_id, doc_id, c.chunk_index, path, clean_title, c.heading_path, c.text))
    return rows


def naive_search(corpus: dict[str, tuple[str, str]], embedder: Embedder):
    """Fixed 1,000-character windows of the same text, exact cosine search over their vectors."""
    paths, texts = [], []
    for path, (_, text) in corpus.items():
        for start in range(0, len(text), NAIVE_CHUNK_CHARS):
            paths.append(path)
            texts.append(text[start : start + NAIVE_CHUNK_CHARS])
    vectors = embedder.encode(texts)

    def search(query: str, n: int, mode: str) -> list[str]:
        scores = vectors @ embedder.encode([query])[0]
        return [paths[i] for i in np.argsort(-scores)[:n]]

    return search, len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/usr/share/doc/git-doc"))
    parser.add_argument("--gold", type=Path, default=GOLD)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--adapt-steps", type=int, default=AdaptationParams.max_steps)
    parser.add_argument("--learning-rate", type=float, default=AdaptationParams.learning_rate)
    parser.add_argument("--batch-size", type=int, default=AdaptationParams.batch_size)
    parser.add_argument("--warmup-steps", type=int, default=AdaptationParams.warmup_steps)
    parser.add_argument("--max-seq-length", type=int, default=AdaptationParams.max_seq_length)
    parser.add_argument("--queries-per-chunk", type=int, default=AdaptationParams.queries_per_chunk)
    parser.add_argument("--no-hard-negatives", action="store_true", help="in-batch negatives only")
    parser.add_argument("--no-adapted", action="store_true", help="skip the fine-tuned model")
    parser.add_argument(
        "--save-pairs", type=Path, help="write the mined pairs (for benchmarks.adaptation_training)"
    )
    args = parser.parse_args()

    gold = load_gold(args.gold)
    corpus = load_corpus(args.corpus)
    settings = Settings(home=Path(tempfile.gettempdir()) / "groundwork-bench")
    embedder = Embedder(device=args.device, batch_size=settings.embedding_batch_size)
    embedder.encode(["warm up"])

    started = time.perf_counter()
    search, naive_chunks = naive_search(corpus, embedder)
    naive = evaluate(search, gold, k=args.k, modes=["vector"])
    naive_seconds = time.perf_counter() - started

    started = time.perf_counter()
    rows = groundwork_rows(corpus, settings, embedder.path)
    ours = groundwork_report(rows, embedder, gold, args.k)
    groundwork_seconds = time.perf_counter() - started

    adapted = None
    if not args.no_adapted:
        params = AdaptationParams(
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            warmup_steps=args.warmup_steps,
            max_steps=args.adapt_steps,
            gpu_max_steps=args.adapt_steps,
            queries_per_chunk=args.queries_per_chunk,
            hard_negatives=not args.no_hard_negatives,
            max_seq_length=args.max_seq_length,
        )
        started = time.perf_counter()
        pairs = mine_pairs(
            gold_table(rows),
            [q.query for q in gold],
            params.max_pairs,
            params.seed,
            params.queries_per_chunk,
            params.hard_negatives,
        )
        print(
            f"adaptation: {len(pairs)} pairs mined from the chunks in {time.perf_counter() - started:.0f} s "
            f"({sum(1 for p in pairs if p.negative)} with a BM25 hard negative from another page); "
            f"gold questions among them: {overlap(pairs, [q.query for q in gold])} (must be 0)"
        )
        if args.save_pairs:
            save_pairs(pairs, args.save_pairs)
        with tempfile.TemporaryDirectory() as folder:
            info = fine_tune(embedder.path, pairs, Path(folder), params, args.device)
            print(
                f"adaptation: {info['steps']} steps on {info['device']} in {info['train_seconds']:.0f} s "
                f"(lr {params.learning_rate}, batch {params.batch_size}, "
                f"warm-up {params.warmup_steps} steps, max_seq_length {params.max_seq_length or 'model'}), "
                f"loss {info['train_loss']}"
            )
            tuned = Embedder(
                model_path=info["weights_path"],
                model_version="adapted",
                device=args.device,
                batch_size=settings.embedding_batch_size,
            )
            adapted = groundwork_report(rows, tuned, gold, args.k)

    report(
        args,
        gold,
        corpus,
        naive,
        ours,
        naive_chunks,
        len(rows),
        naive_seconds,
        groundwork_seconds,
        embedder,
        settings.chunk_max_tokens,
        adapted,
    )


@contextmanager
def indexed_searcher(rows: list[dict], embedder: Embedder) -> Iterator[Searcher]:
    """``rows`` embedded as ``chunk_embeddings`` embeds them, in a temporary LanceDB, behind ``Searcher``."""
    with tempfile.TemporaryDirectory() as folder:
        db = lancedb.connect(folder)
        sync_embeddings(
            db,
            "bench",
            gold_table(rows),
            0,
            embedder.encode,
            embedder.dimension,
            embedder.model_name,
            embedder.version,
        )
        yield Searcher(db, "bench", embedder)


def groundwork_report(rows: list[dict], embedder: Embedder, gold, k: int) -> EvaluationReport:
    """Embed ``rows`` as ``chunk_embeddings`` does and evaluate every mode with ``Searcher``."""
    with indexed_searcher(rows, embedder) as searcher:
        return evaluate(
            searcher_function(searcher), gold, k=k, modes=MODES, indexed_paths=indexed_paths(searcher.table)
        )


def report(
    args,
    gold,
    corpus,
    naive: EvaluationReport,
    ours: EvaluationReport,
    naive_chunks,
    chunks,
    t0,
    t1,
    embedder,
    max_tokens: int,
    adapted: EvaluationReport | None = None,
):
    k = args.k
    print(
        f"corpus: {len(corpus)} pages of {args.corpus} "
        f"({sum(len(t) for _, t in corpus.values()):,} characters); "
        f"gold: {len(gold)} queries; device: {embedder.resolved_device()}; host: {platform.machine()}"
    )
    print(f"naive: {naive_chunks} chunks of {NAIVE_CHUNK_CHARS} characters, {t0:.0f} s")
    print(f"groundwork: {chunks} chunks (<= {max_tokens} tokens), {t1:.0f} s")
    if ours.unknown_paths:
        print(f"WARNING gold paths not indexed: {ours.unknown_paths}")
    print(f"{'method':<22}{'hit@' + str(k):>10}{'recall@' + str(k):>10}{'MRR@10':>10}{'nDCG@10':>10}")
    lines = [("naive (vector)", naive.modes["vector"])] + [(f"champion {m}", ours.modes[m]) for m in MODES]
    if adapted is not None:
        lines += [(f"adapted {m}", adapted.modes[m]) for m in MODES if m != "fulltext"]
    for name, m in lines:
        print(f"{name:<22}{m.hit:>10.3f}{m.recall:>10.3f}{m.mrr:>10.3f}{m.ndcg:>10.3f}")
    base = naive.modes["vector"]
    for label, rep in [("champion", ours)] + ([("adapted", adapted)] if adapted is not None else []):
        best = max(rep.modes.values(), key=lambda m: (m.mrr, m.hit))
        hybrid, vector, fulltext = rep.modes["hybrid"], rep.modes["vector"], ours.modes["fulltext"]
        print(
            f"{label}: best mode ({best.mode}) MRR@10 {best.mrr:.3f} = naive {best.mrr - base.mrr:+.3f} "
            f"(target >= +0.10), hit@{k} {best.hit:.3f} (target >= 0.95); hybrid - max(vector, fulltext): "
            f"MRR@10 {hybrid.mrr - max(vector.mrr, fulltext.mrr):+.3f}, "
            f"hit@{k} {hybrid.hit - max(vector.hit, fulltext.hit):+.3f} (target >= 0)"
        )


if __name__ == "__main__":
    main()
