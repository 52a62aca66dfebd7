"""GPU embedding path: fp16 on CUDA against fp32 on the same machine's CPU, on the pipeline's own texts.

Needs only torch and sentence-transformers (no Dagster, Spark or LanceDB), so it can be carried to a GPU
machine that has nothing else:

    python -m benchmarks.gpu_embedding prepare DIR   # here: texts, CPU reference vectors, the model
    python -m benchmarks.gpu_embedding run DIR       # on the GPU machine (--device cpu to try it here)

``prepare`` writes the embedding inputs of the sample documents' chunks (as ``chunk_embeddings`` builds
them), the packaged model's fp32 CPU vectors for them (the reference), and the model folder with its
weights stored in fp16: half the bytes, and the GPU path casts the weights to fp16 anyway, so its vectors
are the same. ``run`` prints the GPU throughput per batch size as a ratio to the CPU baseline measured
in the same run, the peak GPU memory, and the cosine agreement of the GPU vectors with the reference.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from models import embedding_model
from models.embedding_model import encode, load_model, resolve_device

WEIGHTS = "model.safetensors"


def prepare(out: Path) -> None:
    from safetensors.torch import load_file, save_file

    from benchmarks._corpus import sample_chunks
    from models.embedding_model import embedding_input, packaged_model_path

    texts = [embedding_input(r["title"], r["heading_path"], r["text"]) for r in sample_chunks()]
    out.mkdir(parents=True, exist_ok=True)
    (out / "texts.json").write_text(json.dumps(texts))
    source = packaged_model_path()
    np.save(out / "reference.npy", encode(load_model(str(source), "cpu"), texts, 64))
    model_dir = out / "model"
    shutil.copytree(source, model_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(WEIGHTS, "*.md"))
    weights = {name: tensor.half() for name, tensor in load_file(source / WEIGHTS).items()}
    save_file(weights, model_dir / WEIGHTS, metadata={"format": "pt"})
    print(f"{len(texts)} texts, reference vectors and the fp16 model written to {out}")


def _timed(model, texts: list[str], batch: int) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vectors = encode(model, texts, batch)  # returns numpy: the device work is finished
    return time.perf_counter() - started, vectors


def run(
    data: Path, device: str, batches: list[int], chunks: int, cpu_chunks: int, thread_counts: list[int]
) -> dict:
    """Throughput per batch size (and per tokenizer-thread count at the largest batch) and agreement."""
    import torch

    default_threads = embedding_model.TOKENIZER_THREADS
    distinct = json.loads((data / "texts.json").read_text())
    texts = [distinct[i % len(distinct)] for i in range(chunks)]
    reference = np.load(data / "reference.npy")
    device = resolve_device(device)
    report: dict = {"device": device, "texts": len(texts), "distinct_texts": len(distinct)}
    if device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(0)
    report["torch"] = torch.__version__
    report["cpu_threads"] = torch.get_num_threads()
    report["machine"] = platform.machine()

    # CPU baseline, fp32 (the carried weights are fp16; upcast them as the packaged fp32 model would be).
    cpu = load_model(str(data / "model"), "cpu")
    cpu.float()
    _timed(cpu, texts[:64], 64)
    seconds, _ = _timed(cpu, texts[:cpu_chunks], 64)
    report["cpu_chunks_per_s"] = round(cpu_chunks / seconds, 1)
    _, cpu_distinct = _timed(cpu, distinct, 64)
    report["cpu_fp16_weights_vs_reference_min_cosine"] = float((cpu_distinct * reference).sum(1).min())

    model = load_model(str(data / "model"), device)
    report["dtype"] = str(next(model.parameters()).dtype)
    _timed(model, texts[:1024], max(batches))  # warm-up: kernels, allocator
    report["batches"] = {}
    for batch in batches:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        seconds, _ = _timed(model, texts, batch)
        row = {"chunks_per_s": round(len(texts) / seconds, 1)}
        row["ratio_to_cpu"] = round(row["chunks_per_s"] / report["cpu_chunks_per_s"], 1)
        if device.startswith("cuda"):
            row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        report["batches"][batch] = row
        print(f"batch {batch:5d}: {row}", flush=True)
    report["tokenizer_threads"] = {}
    for threads in thread_counts:
        embedding_model.TOKENIZER_THREADS = threads
        seconds, _ = _timed(model, texts, best_batch := max(batches))
        report["tokenizer_threads"][threads] = {
            "batch": best_batch,
            "chunks_per_s": round(len(texts) / seconds, 1),
        }
        print(f"tokenizer threads {threads:3d}: {report['tokenizer_threads'][threads]}", flush=True)
    embedding_model.TOKENIZER_THREADS = default_threads
    # The library's own loop (tokenizing on the thread that feeds the model), same texts, best batch.
    best = max(report["batches"], key=lambda b: report["batches"][b]["chunks_per_s"])
    started = time.perf_counter()
    model.encode(texts, batch_size=best, convert_to_numpy=True, normalize_embeddings=True)
    library = len(texts) / (time.perf_counter() - started)
    report["library_encode"] = {"batch": best, "chunks_per_s": round(library, 1)}
    report["overlapped_over_library"] = round(report["batches"][best]["chunks_per_s"] / library, 2)
    _, vectors = _timed(model, distinct, 256)
    cosine = (vectors * reference).sum(axis=1)
    report["vs_reference_cosine"] = {"min": float(cosine.min()), "mean": float(cosine.mean())}
    top = lambda m: np.argsort(-(m @ m.T), axis=1)[:, 1:6]  # noqa: E731
    report["top5_neighbours_same_as_reference"] = float((top(vectors) == top(reference)).mean())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "run"])
    parser.add_argument("data", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, action="append", help="batch sizes (default 64-1024)")
    parser.add_argument("--threads", type=int, action="append", default=[], help="tokenizer threads to try")
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--cpu-chunks", type=int, default=1_000)
    parser.add_argument("--out", type=Path, help="also write the report here as JSON")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.data)
        return
    batches = args.batch or [64, 128, 256, 512, 1024]
    report = run(args.data, args.device, batches, args.chunks, args.cpu_chunks, args.threads)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
