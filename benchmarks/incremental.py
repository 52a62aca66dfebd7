"""Incremental embedding: a full build of >= 20,000 chunks, then 1% of the documents change.

Prints the embedding-stage time of the full build and of the incremental run (which embeds only the
changed chunks and deletes their old versions), and their ratio. Target: ratio <= 0.05.

    python benchmarks/incremental.py [--documents 2000] [--chunks-per-document 10] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lancedb

from benchmarks._corpus import gold_table, synthetic_corpus
from resources.embedder import Embedder
from resources.lancedb.sync import sync_embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--chunks-per-document", type=int, default=10)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    embedder = Embedder(device=args.device)
    embedder.encode(["warm up"])
    full = gold_table(synthetic_corpus(args.documents, args.chunks_per_document))
    changed_docs = max(1, round(args.documents * args.changed))
    edits = {d: 1 for d in range(0, args.documents, args.documents // changed_docs)[:changed_docs]}
    edited = gold_table(synthetic_corpus(args.documents, args.chunks_per_document, edits))

    def run(db, gold, version):
        started = time.perf_counter()
        result = sync_embeddings(
            db,
            "bench",
            gold,
            version,
            embedder.encode,
            embedder.dimension,
            embedder.model_name,
            embedder.version,
        )
        return time.perf_counter() - started, result

    with tempfile.TemporaryDirectory() as folder:
        db = lancedb.connect(folder)
        full_seconds, first = run(db, full, 0)
        incremental_seconds, second = run(db, edited, 1)
    assert first.embedded == full.num_rows and second.rows == full.num_rows
    print(
        f"device: {embedder.resolved_device()}; corpus: {full.num_rows} chunks in {args.documents} documents"
    )
    print(f"full build:  embedded {first.embedded} chunks in {full_seconds:.1f} s")
    print(
        f"incremental: {len(edits)} documents changed ({args.changed:.0%}); embedded {second.embedded}, "
        f"deleted {second.deleted} in {incremental_seconds:.2f} s"
    )
    print(f"ratio incremental/full: {incremental_seconds / full_seconds:.4f} (target <= 0.05)")


if __name__ == "__main__":
    main()
