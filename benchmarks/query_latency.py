"""Query latency and recall of the serving path at 100,000 and 1,000,000 chunks.

Builds (once, reused on later runs) a LanceDB chunk table of synthetic clustered 384-d unit vectors with
the project's schema and `maintain_indexes`, activates it, then measures with vectors as queries (no
embedding time, which is measured separately on real text):

- in process: `Searcher.search(vector=...)` built as the HTTP service builds it, access filter included;
- over HTTP: `POST /search` with a `vector` body against `groundwork serve` started in a subprocess,
  semantic cache off, one client on a keep-alive connection;
- recall@10 of what the Searcher serves against exact search (`nearest(..., exact=True)`), same access
  filter.

    python -m benchmarks.query_latency --rows 100000 --rows 1000000 --data-dir /tmp/gw-bench
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("LANCEDB_LOG", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lancedb
import numpy as np
import pyarrow as pa

from benchmarks.startup import create_api_key, free_port
from models.embedding_model import MODEL_NAME, packaged_model_version
from resources.lancedb.query import nearest
from resources.lancedb.sync import maintain_indexes
from resources.lancedb.tables import (
    activate,
    embeddings_schema,
    model_table_name,
    open_active,
    open_or_create,
    with_citations,
)

DIM = 384
CENTRES = 1_000
LOGICAL = "chunk_embeddings"
BATCH = 50_000
GROUPS = ["public"]


def _unit(points: np.ndarray) -> np.ndarray:
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _centres() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(CENTRES, DIM))


def clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 1,000 centres: the shape real embeddings have, and a fair recall test."""
    rng = np.random.default_rng(seed)
    centres = _centres()
    return _unit(centres[rng.integers(0, CENTRES, n)] + 0.35 * rng.normal(size=(n, DIM)))


def _heading_path(i: int) -> str:
    """Each synthetic document has a few sections, as real Markdown and HTML pages do."""
    return f"Document {i // 10} > Section {i % 10 // 3 + 1}"


def _delta_version(i: int) -> int:
    """Each load batch stands for one pipeline run, so the Delta versions vary as in a grown index."""
    return 1 + i // BATCH


def _rows(start: int, n: int, schema: pa.Schema) -> pa.Table:
    ids = range(start, start + n)
    vectors = clustered(n, seed=start + 1)
    # Half the chunks belong to another group, so the access filter has work to do.
    groups = [["public"] if i % 2 else ["finance"] for i in ids]
    return with_citations(
        pa.table(
            {
                "chunk_id": [f"c{i:07d}" for i in ids],
                "document_id": [f"d{i // 10:06d}" for i in ids],
                "chunk_index": pa.array([i % 10 for i in ids], pa.int32()),
                "text": [f"synthetic chunk {i}" for i in ids],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
                "path": [f"synthetic/{i // 10:06d}.md" for i in ids],
                "title": [f"Document {i // 10}" for i in ids],
                "media_type": ["text/markdown"] * n,
                "heading_path": [_heading_path(i) for i in ids],
                "page": pa.nulls(n, pa.int32()),
                "access_groups": groups,
                "delta_version": pa.array([_delta_version(i) for i in ids], pa.int64()),
                "content_hash": [f"h{i}" for i in ids],
                "model_name": [MODEL_NAME] * n,
                "model_version": [packaged_model_version()] * n,
                "created_at": pa.nulls(n, pa.timestamp("us", tz="UTC")),
            }
        )
    ).cast(schema.remove_metadata())


def build(rows: int, data_dir: Path) -> Path:
    """The benchmark database for ``rows`` chunks, built once (index build dominates: minutes at 1M)."""
    uri = data_dir / f"lancedb-{rows}"
    ready = uri / "READY"
    db = lancedb.connect(uri)
    model_id = f"{MODEL_NAME}@{packaged_model_version()}"
    name = model_table_name(LOGICAL, model_id)
    schema = embeddings_schema(DIM, model_id)
    if ready.exists():
        print(f"[{rows:,}] reusing {uri}", flush=True)
        open_or_create(db, name, DIM, model_id)  # a table built before a schema change is brought up to date
        return uri
    started = time.perf_counter()
    if name in db.list_tables().tables and db.open_table(name).count_rows() == rows:
        # An earlier build loaded every row and stopped while indexing: index those rows.
        table = db.open_table(name)
        print(f"[{rows:,}] reusing the {rows:,} rows loaded by an earlier build", flush=True)
    else:
        table = db.create_table(name, schema=schema, mode="overwrite")
        for start in range(0, rows, BATCH):
            table.add(_rows(start, min(BATCH, rows - start), schema))
            print(f"[{rows:,}] loaded {min(start + BATCH, rows):,} rows", flush=True)
    print(f"[{rows:,}] building indexes (FTS, label list, IVF_HNSW_SQ) ...", flush=True)
    indexed = time.perf_counter()
    maintain_indexes(table, vector_index_min_rows=10_000, keep_versions=timedelta(days=7))
    activate(db, LOGICAL, name)
    print(
        f"[{rows:,}] load {indexed - started:.0f}s, index build {time.perf_counter() - indexed:.0f}s",
        flush=True,
    )
    ready.write_text("ok")
    return uri


def percentiles(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _searcher(uri: Path):
    """A Searcher as `groundwork serve` builds it: the active pointer re-read at most once a refresh."""
    from resources.embedder import Embedder
    from resources.settings import Settings
    from serving.search import Searcher

    refresh = Settings().serve_refresh_seconds
    return Searcher(lancedb.connect(uri), LOGICAL, Embedder(), refresh_seconds=refresh)


def recall_at_10(uri: Path, queries: np.ndarray) -> float:
    """Recall@10 of what the Searcher serves (index and access-filter plan) against exact search."""
    table = open_active(lancedb.connect(uri), LOGICAL)
    searcher = _searcher(uri)
    where = "array_has_any(access_groups, make_array('public'))"
    recalls = []
    for q in queries:
        exact = nearest(table, q, 10, exact=True).where(where, prefilter=True).select(["chunk_id"]).to_list()
        served = searcher.search("", k=10, mode="vector", groups=GROUPS, vector=q)
        recalls.append(len({r["chunk_id"] for r in exact} & {h.chunk_id for h in served}) / 10)
    return float(np.mean(recalls))


def in_process(uri: Path, queries: np.ndarray) -> tuple[list[float], list[float], dict[str, int]]:
    """Latency of the Searcher (the service's path) and of the bare `nearest` query, in ms, and how the
    Searcher's access filter ran."""
    searcher = _searcher(uri)
    table = open_active(lancedb.connect(uri), LOGICAL)
    for q in queries[:10]:  # warm caches
        searcher.search("", k=10, mode="vector", groups=GROUPS, vector=q)
    served, bare = [], []
    for q in queries:
        t = time.perf_counter()
        hits = searcher.search("", k=10, mode="vector", groups=GROUPS, vector=q)
        served.append((time.perf_counter() - t) * 1000)
        assert len(hits) == 10
        t = time.perf_counter()
        nearest(table, q, 10).select(["chunk_id", "_distance"]).to_list()
        bare.append((time.perf_counter() - t) * 1000)
    return served, bare, dict(searcher.filter_plans)


def over_http(uri: Path, queries: np.ndarray) -> list[float]:
    """Latency of POST /search with a vector body against `groundwork serve` in a subprocess, in ms."""
    import httpx

    home = Path(tempfile.mkdtemp(prefix="gw-bench-home-"))
    env = {
        **os.environ,
        "GROUNDWORK_HOME": str(home),
        "GROUNDWORK_LANCEDB_URI": str(uri),
        "GROUNDWORK_SERVE_CACHE_ENABLED": "false",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    cli = [sys.executable, "-m", "pipelines.cli"]
    key = create_api_key(cli, env, "bench")
    port = free_port()
    server = subprocess.Popen(
        [*cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}) as client:
            deadline = time.time() + 600  # the model loads first: minutes on a busy machine
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError("the server did not start within 600 s")
                time.sleep(0.5)
            body = lambda q: {"vector": q.tolist(), "k": 10, "mode": "vector"}  # noqa: E731
            for q in queries[:10]:
                client.post("/search", json=body(q)).raise_for_status()
            ms = []
            for q in queries:
                t = time.perf_counter()
                response = client.post("/search", json=body(q))
                ms.append((time.perf_counter() - t) * 1000)
                response.raise_for_status()
            return ms
    finally:
        server.terminate()
        server.wait(30)


def embedding_ms(texts: list[str]) -> list[float]:
    """What a text query adds on top: embedding one query with the packaged model, in ms."""
    from resources.embedder import Embedder

    embedder = Embedder()
    embedder.encode(["warm up"])
    ms = []
    for text in texts:
        t = time.perf_counter()
        embedder.encode([text])
        ms.append((time.perf_counter() - t) * 1000)
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="corpus sizes (default 100k and 1M)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "groundwork-bench")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--recall-queries", type=int, default=50)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    sizes = args.rows or [100_000, 1_000_000]
    args.data_dir.mkdir(parents=True, exist_ok=True)
    queries = clustered(args.queries, seed=999_999_937)
    lines = []
    for rows in sizes:
        uri = build(rows, args.data_dir)
        if args.build_only:
            continue
        print(f"[{rows:,}] recall@10 on {args.recall_queries} queries ...", flush=True)
        recall = recall_at_10(uri, queries[: args.recall_queries])
        print(f"[{rows:,}] in-process latency on {len(queries)} queries ...", flush=True)
        served, bare, plans = in_process(uri, queries)
        s50, s99 = percentiles(served)
        b50, b99 = percentiles(bare)
        line = (
            f"rows={rows:,} recall@10={recall:.3f} in-process Searcher p50={s50:.1f}ms p99={s99:.1f}ms "
            f"(bare nearest p50={b50:.1f}ms p99={b99:.1f}ms; access filter plans {plans})"
        )
        print(line, flush=True)
        http = [] if args.skip_http else over_http(uri, queries)
        if http:
            h50, h99 = percentiles(http)
            line += f" HTTP /search(vector) p50={h50:.1f}ms p99={h99:.1f}ms"
        lines.append(line)
        print(line, flush=True)
    if not args.build_only:
        e50, e99 = percentiles(embedding_ms([f"how do I return item number {i}?" for i in range(100)]))
        lines.append(f"query embedding (text -> vector, CPU) p50={e50:.1f}ms p99={e99:.1f}ms")
        print("\n".join(["", "summary:", *lines]))


if __name__ == "__main__":
    main()
