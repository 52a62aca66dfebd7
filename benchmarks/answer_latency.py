"""/answer with the local generator on this machine: latency p50/p95 over HTTP, tokens per second, and
the generator chain's overhead against calling the same backend directly.

The sample documents are indexed as the pipeline indexes them (``benchmarks._corpus.sample_chunks``), the
prompt and the local generator are registered with the CLI (`groundwork prompts sync`, `groundwork
generators register`), and `groundwork serve` runs in a subprocess with the chain set to ``local`` and the
cache off, so every request retrieves and generates (``--max-tokens`` each, one decoding thread). The gold
questions are asked one at a time. Then, with the server stopped, the same rendered prompts go to the
same model in this process twice: straight to ``LocalModel.chat`` and through ``GeneratorChain`` (retry
loop, breaker, trail), alternating which goes first so that llama.cpp's prompt cache favours neither.

    python -m benchmarks.answer_latency [--max-tokens 64] [--questions 10] [--compare 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import lancedb

from benchmarks._corpus import gold_table, sample_chunks
from benchmarks.startup import create_api_key, free_port
from models.evaluation import load_gold
from resources.embedder import Embedder
from resources.lancedb.sync import sync_embeddings
from resources.settings import Settings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build(home: Path) -> dict[str, str]:
    """An index of the sample documents, the prompt and the generator registered; the server's env."""
    env = {
        **os.environ,
        "GROUNDWORK_HOME": str(home),
        "GROUNDWORK_SERVE_CACHE_ENABLED": "false",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    settings = Settings(home=home)
    embedder = Embedder()
    sync_embeddings(
        lancedb.connect(settings.lancedb_uri), settings.embeddings_table, gold_table(sample_chunks()), 1,
        embedder.encode, embedder.dimension, embedder.model_name, embedder.version,
    )  # fmt: skip
    cli = [sys.executable, "-m", "pipelines.cli"]
    for command in (["prompts", "sync"], ["generators", "register"]):
        subprocess.run([*cli, *command], env=env, check=True, capture_output=True)
    return env


def over_http(env: dict[str, str], questions: list[str], max_tokens: int) -> list[dict]:
    """One /answer per question against `groundwork serve`: latency, tokens, generation seconds, prompt."""
    cli = [sys.executable, "-m", "pipelines.cli"]
    key = create_api_key(cli, env, "bench")
    port = free_port()
    server_env = {
        **env,
        "GROUNDWORK_ANSWER_CHAIN": "local",
        "GROUNDWORK_ANSWER_MAX_TOKENS": str(max_tokens),
        "GROUNDWORK_GENERATOR_THREADS": "1",
    }
    server = subprocess.Popen(
        [*cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=server_env
    )
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=300
        ) as client:
            deadline = time.time() + 600
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError("the server did not start within 600 s")
                time.sleep(0.5)
            client.post("/answer", json={"query": "warm up: how do returns work?"}).raise_for_status()
            runs = []
            for question in questions:
                started = time.perf_counter()
                response = client.post("/answer", json={"query": question, "k": 5})
                seconds = time.perf_counter() - started
                response.raise_for_status()
                body = response.json()
                runs.append({"seconds": seconds, **body["usage"], "prompt": body["prompt"], "body": body})
            return runs
    finally:
        server.terminate()
        server.wait(30)


def direct_vs_chain(prompts: list[str], max_tokens: int) -> tuple[list[float], list[float], list[dict]]:
    """Seconds per prompt straight to the model and through the chain (alternating which goes first, the
    prompt cache off so neither reuses the other's work), and llama.cpp's timings of the direct calls."""
    from models.generator_registry import package_file
    from resources.llamacpp import LocalModel
    from serving.chain import GeneratorChain, Link
    from serving.generators import GenerationRequest, LocalBackend
    from serving.resilience import CircuitBreaker

    model = LocalModel(package_file(), threads=1, cache_prompt=False)
    chain = GeneratorChain([Link(LocalBackend(model, "bench@1", "1", 300.0), CircuitBreaker())])
    model.chat("warm up", 4)
    direct, chained, timings = [], [], []

    def timed(call) -> float:
        started = time.perf_counter()
        call()
        return time.perf_counter() - started

    def run_direct(prompt: str) -> None:
        timings.append(model.chat(prompt, max_tokens).get("timings", {}))

    for i, prompt in enumerate(prompts):
        run_direct = lambda p=prompt, run=run_direct: run(p)  # noqa: E731
        run_chain = lambda p=prompt: chain.generate(GenerationRequest(p, "", [], max_tokens))  # noqa: E731
        if i % 2 == 0:
            direct.append(timed(run_direct))
            chained.append(timed(run_chain))
        else:
            chained.append(timed(run_chain))
            direct.append(timed(run_direct))
    return direct, chained, timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--compare", type=int, default=6, help="prompts timed direct and through the chain")
    args = parser.parse_args()
    questions = [g.query for g in load_gold(Settings().eval_gold_file)][: args.questions]
    with tempfile.TemporaryDirectory(prefix="gw-answer-bench-") as folder:
        env = build(Path(folder))
        runs = over_http(env, questions, args.max_tokens)
    latency = [r["seconds"] for r in runs]
    p50, p95 = statistics.median(latency), percentile(latency, 0.95)
    completion = sum(r["completion_tokens"] for r in runs)
    prompt_tokens = sum(r["prompt_tokens"] for r in runs)
    generating = sum(r["generation_seconds"] for r in runs)
    direct, chained, timings = direct_vs_chain([r["prompt"] for r in runs][: args.compare], args.max_tokens)
    prefill = statistics.median(t.get("prompt_per_second", 0.0) for t in timings)
    decode = statistics.median(t.get("predicted_per_second", 0.0) for t in timings)
    grounded = sum(r["body"]["grounded"] for r in runs)
    d, c = statistics.median(direct), statistics.median(chained)
    lines = [
        f"machine: {os.cpu_count()} cores; local generator SmolLM2-135M-Instruct Q4_1, 1 thread, "
        f"max_tokens {args.max_tokens}, {len(runs)} gold questions, cache off",
        f"/answer latency: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms",
        f"per answer: {prompt_tokens / len(runs):.0f} prompt and "
        f"{completion / len(runs):.1f} completion tokens; "
        f"{(prompt_tokens + completion) / generating:.0f} tokens/s through the generator; "
        f"{completion / generating:.1f} completion tokens per second of generation (llama.cpp, direct calls: "
        f"prompt {prefill:.0f} tokens/s, decoding {decode:.0f} tokens/s)",
        f"grounded answers (a valid [n] citation): {grounded}/{len(runs)}",
        f"direct LocalModel.chat p50 {d * 1000:.0f} ms; through GeneratorChain p50 {c * 1000:.0f} ms; "
        f"chain/direct ratio {c / d:.3f} ({len(direct)} prompts, prompt cache off); "
        f"/answer p50 / direct p50 {p50 / d:.2f} (/answer reuses the template's cached prefix)",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
