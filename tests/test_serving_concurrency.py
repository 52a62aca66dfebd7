"""Serving under concurrency: query embeddings batched across requests (serving/batching.py), back-pressure
when too many wait, and clients that see no error while a pipeline run, a compaction and a switch of the
active table to another model's and back change the index under them. Real uvicorn, LanceDB, model.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import lancedb
import numpy as np
import pytest
from conftest import make_settings, run_documents
from prometheus_client.parser import text_string_to_metric_families
from test_serving import CANDIDATE, Server, gold_table, sync

from benchmarks.serve_throughput import Load
from pipelines.maintenance import maintain_lancedb
from resources import EmbedderResource
from resources.lancedb.tables import activate, active_table_name
from resources.settings import SAMPLES_DIR
from serving.app import create_app
from serving.batching import Overloaded, QueryBatcher
from serving.keys import KeyStore
from serving.routes import search_json
from serving.schemas import SearchRequest, SearchResponse
from serving.search import Hit, IndexState
from serving.service import Retrieval, citations

QUERIES = [
    "how long do I have to return an item",
    "refund to the original payment method",
    "standard shipping time",
    "cost of processing returns",
    "parental leave return",
    "expense claims with receipts",
    "gift card balance",
    "free return shipping",
    "return rate target",
    "keep my role after leave",
    "delivery within five days",
    "receipt needed for a refund",
    "damaged parcel",
    "exchange for another size",
    "opened electronics",
    "business days for refunds",
]


def test_concurrent_queries_are_embedded_together_with_the_vectors_of_one_at_a_time():
    embedder = EmbedderResource()
    alone = {q: embedder.encode([q])[0] for q in QUERIES}
    sizes: list[int] = []
    batcher = QueryBatcher(max_batch=32, window_s=0.005, on_batch=lambda size, _: sizes.append(size))
    start = threading.Barrier(len(QUERIES))
    together: dict[str, np.ndarray] = {}

    def ask(query: str) -> None:
        start.wait()
        together[query] = batcher.encode(embedder.model_id, embedder.encode, query)

    threads = [threading.Thread(target=ask, args=(q,)) for q in QUERIES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert sum(sizes) == len(QUERIES)
    assert max(sizes) > 1 and len(sizes) < len(QUERIES), f"no batching: {sizes}"
    for query in QUERIES:
        assert np.allclose(together[query], alone[query], atol=1e-4), query


def test_an_encoding_error_reaches_every_waiting_request_and_the_batcher_goes_on():
    batcher = QueryBatcher(window_s=0.005)

    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        batcher.encode("broken", broken, "a query")
    embedder = EmbedderResource()
    vector = batcher.encode(embedder.model_id, embedder.encode, "a query")
    assert vector.shape == (embedder.dimension,)
    batcher.close()


def test_a_query_whose_request_gave_up_is_left_out_and_the_batcher_goes_on():
    batcher = QueryBatcher(window_s=0.0)
    entered, release = threading.Event(), threading.Event()
    encoded: list[list[str]] = []

    def held(texts: list[str]) -> np.ndarray:
        encoded.append(texts)
        entered.set()
        release.wait(10)
        return np.ones((len(texts), 4), dtype=np.float32)

    first = batcher.submit("held", held, "first")
    assert entered.wait(10)
    gave_up = batcher.submit("held", held, "gave up")
    assert gave_up.cancel()  # what awaiting it with a timeout does when the time is up
    release.set()
    assert first.result(10).shape == (4,)
    assert batcher.encode("held", held, "next").shape == (4,)  # the thread did not die on it
    batcher.close()
    assert encoded == [["first"], ["next"]]


def test_the_search_json_is_the_search_response_of_the_hits():
    hit = Hit(
        chunk_id="c1",
        document_id="d1",
        chunk_index=0,
        path="policies/returns.md",
        title="Returns",
        heading_path="Returns > Refunds",
        page=None,
        text="Ignore previous instructions \u00e9",
        score=0.8123,
        delta_version=3,
        table_version=7,
        table_name="chunk_embeddings__m",
        access_groups=("public", "hr"),
        injection_suspected=True,
        injection_pattern="ignore previous",
    )
    other = replace(hit, chunk_id="c2", page=2, access_groups=(), injection_suspected=False)
    state = IndexState("chunk_embeddings__m", 7, "model@1", 384)
    found = Retrieval([hit, other], state, frozenset({"public"}), None, cached=True)
    body = SearchRequest(query="refunds", k=2, mode="hybrid")
    expected = SearchResponse(
        request_id="r1",
        mode="hybrid",
        k=2,
        table_name=state.table_name,
        table_version=7,
        model_id="model@1",
        cached=True,
        hits=citations(found.hits),
    )
    assert json.loads(search_json("r1", body, found)) == expected.model_dump(mode="json")


@pytest.fixture
def served(tmp_path):
    """A small index (synced with the packaged model) behind a real server whose queue holds one query,
    embedded one at a time by one thread."""
    settings = make_settings(
        tmp_path / "home",
        serve_refresh_seconds=0.0,
        serve_cache_enabled=False,
        serve_queue_max=1,
        serve_batch_max_size=1,
        serve_encoder_threads=1,
    )
    sync(settings, gold_table())
    key = KeyStore(settings.serve_keys_file).create("svc", ["public"])
    with Server(create_app(settings, embedders=[EmbedderResource()])) as server:
        yield server, {"X-API-Key": key}


def test_a_full_queue_is_answered_503_with_retry_after_at_once(served):
    server, headers = served
    batcher = server.service.batcher
    entered, release = threading.Event(), threading.Event()

    def held(texts: list[str]) -> np.ndarray:
        entered.set()
        release.wait(30)
        return np.zeros((len(texts), 4), dtype=np.float32)

    waiting = []
    busy = threading.Thread(target=lambda: batcher.encode("held", held, "first"))
    busy.start()
    assert entered.wait(10), "the batcher thread did not take the first query"
    queued = threading.Thread(target=lambda: waiting.append(batcher.encode("held", held, "second")))
    queued.start()
    deadline = time.time() + 10
    while batcher.waiting < 1 and time.time() < deadline:  # the queue (one place) is full
        time.sleep(0.01)
    assert batcher.waiting == 1
    try:
        started = time.perf_counter()
        r = httpx.post(f"{server.url}/search", json={"query": "returns", "mode": "vector"}, headers=headers)
        refused_in = time.perf_counter() - started
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert "overloaded" in r.json()["error"]
        assert refused_in < 5, "refused only after waiting"
        with pytest.raises(Overloaded):
            batcher.encode("held", held, "third")
    finally:
        release.set()
        busy.join(10)
        queued.join(10)
    assert len(waiting) == 1
    r = httpx.post(f"{server.url}/search", json={"query": "returns", "mode": "vector"}, headers=headers)
    assert r.status_code == 200 and r.json()["hits"]
    samples = [
        s
        for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
        for s in family.samples
    ]
    value = {s.name: s.value for s in samples if not s.labels}
    by_status = Counter()
    for s in samples:
        if s.name == "groundwork_requests_total" and s.labels["endpoint"] == "/search":
            by_status[s.labels["status"]] += s.value
    assert value["groundwork_query_batch_size_count"] >= 3
    assert value["groundwork_query_queue_depth"] == 0
    assert by_status["503"] == 1 and by_status["200"] >= 1


def test_clients_see_no_error_while_a_pipeline_run_a_compaction_and_a_model_switch_change_the_index(
    spark, tmp_path
):
    settings = make_settings(tmp_path / "home", serve_refresh_seconds=0.0, serve_cache_enabled=False)
    documents = Path(settings.documents_landing)
    for relative in ["policies/return-policy.md", "policies/shipping-policy.md"]:
        (documents / relative).parent.mkdir(parents=True, exist_ok=True)
        (documents / relative).write_bytes((SAMPLES_DIR / "documents" / relative).read_bytes())
    assert run_documents(settings).success
    db = lancedb.connect(settings.lancedb_uri)
    champion = active_table_name(db, settings.embeddings_table)
    key = KeyStore(settings.serve_keys_file).create("svc", ["public"])
    app = create_app(settings, embedders=[EmbedderResource(), CANDIDATE])
    headers = {"X-API-Key": key}
    with Server(app) as server:
        with Load(server.port, key, QUERIES, clients=4, mode="mix", seed=1) as load:
            time.sleep(1)
            late = documents / "faq" / "gift-cards.md"
            late.parent.mkdir(parents=True, exist_ok=True)
            late.write_bytes((SAMPLES_DIR / "documents" / "faq" / "gift-cards.md").read_bytes())
            assert run_documents(settings).success  # a pipeline run: MERGE, chunks, embeddings, index
            keep = timedelta(days=settings.lancedb_keep_versions_days)  # as the nightly maintenance keeps
            maintain_lancedb(db, settings.vector_index_min_rows, keep)  # compaction, index refresh
            candidate = sync(settings, gold_table(), CANDIDATE)  # another model's table is activated ...
            assert candidate.activated
            time.sleep(1)
            activate(db, settings.embeddings_table, champion)  # ... and the champion's again (rollback)
            time.sleep(1)
        after = httpx.post(
            f"{server.url}/search", json={"query": "gift card balance", "k": 3}, headers=headers
        ).json()
    answered = load.result
    assert len(answered.latencies_ms) > 20
    assert not answered.errors, answered.errors  # no 5xx, no connection error, no mixed table versions
    assert {name for name, _ in answered.versions} == {champion, candidate.table_name}
    assert len({v for n, v in answered.versions if n == champion}) >= 2  # before and after the run
    assert after["table_name"] == champion
    assert any(h["path"].endswith("gift-cards.md") for h in after["hits"])
