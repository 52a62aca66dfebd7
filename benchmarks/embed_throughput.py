"""Embedding throughput: the pipeline's embedding stage against raw `SentenceTransformer.encode`.

Both embed the same chunk texts (the sample documents' chunks, repeated to --chunks) in the same run;
the pipeline figure includes everything `chunk_embeddings` does: planning, embedding, Arrow assembly,
the LanceDB merge and index maintenance. Target: ratio >= 0.9. Runs on CUDA when present.

    python benchmarks/embed_throughput.py [--chunks 1000] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import tempfile
import time

import lancedb

from benchmarks._corpus import gold_table, sample_chunks
from models.embedding_model import embedding_input
from resources.embedder import Embedder
from resources.lancedb.sync import sync_embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    base = sample_chunks()
    rows = []
    for i in range(args.chunks):
        row = dict(base[i % len(base)])
        row["chunk_id"] = hashlib.sha256(f"{row['chunk_id']}:{i}".encode()).hexdigest()[:32]
        rows.append(row)
    gold = gold_table(rows)
    texts = [embedding_input(r["title"], r["heading_path"], r["text"]) for r in rows]
    embedder = Embedder(device=args.device)
    device = embedder.resolved_device()
    embedder.encode(texts[:64])  # load and warm up once, outside both timings

    started = time.perf_counter()
    embedder.model().encode(
        texts,
        batch_size=embedder.gpu_batch_size if device.startswith("cuda") else embedder.batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    raw_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = sync_embeddings(
            lancedb.connect(folder),
            "bench",
            gold,
            0,
            embedder.encode,
            embedder.dimension,
            embedder.model_name,
            embedder.version,
        )
        pipeline_seconds = time.perf_counter() - started
    assert result.embedded == len(rows)

    gpu = ""
    if device.startswith("cuda"):
        import torch

        gpu = f" ({torch.cuda.get_device_name(0)})"
    print(f"device: {device}{gpu}; host: {platform.processor() or platform.machine()}; chunks: {len(rows)}")
    print(f"raw SentenceTransformer.encode: {len(rows) / raw_seconds:.1f} chunks/s ({raw_seconds:.1f} s)")
    rate = len(rows) / pipeline_seconds
    print(f"pipeline embedding stage:       {rate:.1f} chunks/s ({pipeline_seconds:.1f} s)")
    print(f"ratio pipeline/raw: {raw_seconds / pipeline_seconds:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
