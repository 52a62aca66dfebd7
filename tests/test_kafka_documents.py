"""Document-event topics (docs/streams.md, "A documents topic"): a real broker's events into the same silver
documents, chunks and index as landed files, quarantine at their offsets, `groundwork produce documents`,
the `groundwork dev` sample scenario, the worker and a SIGKILL mid-stream.

A file of its own so that `pytest --dist loadfile` runs it beside tests/test_kafka.py, not after it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from confluent_kafka import Producer

from tests.test_kafka import consume_all, kill_after_first_batch, produce


def doc_event(doc_id: str, text: str, media_type: str = "text/markdown", **extra) -> bytes:
    return json.dumps({"id": doc_id, "text": text, "media_type": media_type, **extra}).encode()


def test_document_events_flow_into_silver_documents_chunks_and_the_index(kafka_broker, spark, tmp_path):
    """A documents topic is a second way documents land: upserts become chunks in the index, a tombstone
    removes its document from it, bad events are quarantined at their offset, and counts reconcile."""
    from assets.documents.topics import event_path
    from resources.lakehouse import Lakehouse
    from serving.champion import champion_searcher
    from tests.conftest import make_settings, materialized, run_documents

    topic = f"cms-{uuid.uuid4().hex[:8]}"
    settings = make_settings(tmp_path / "home", kafka_bootstrap=kafka_broker.bootstrap, documents_topic=topic)
    Path(settings.documents_landing).mkdir(parents=True)
    lakehouse = Lakehouse.from_settings(settings)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "message.max.bytes": 2_000_000})
    sent = [
        (
            b"kayak",
            doc_event("kayak", "# Kayak storage\n\nStore the kayak hull-up on padded racks, out of sun."),
        ),
        (
            b"stove",
            doc_event(
                "stove",
                "<h1>Stove care</h1><p>Clean the burner jet with the pricking wire after every trip.</p>",
                "text/html",
                title="Camp stove care",
                access_groups=["staff"],
            ),
        ),
        (b"broken", b'{"id": "broken", '),  # invalid JSON
        (b"notext", json.dumps({"id": "notext", "title": "No text"}).encode()),  # missing text
        (b"scan", doc_event("scan", "%PDF-1.4", "application/pdf")),  # not a text media type
        (b"huge", doc_event("huge", "x" * 1_000_001)),  # over 1 MB
    ]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    first = materialized(run_documents(settings))
    assert first["bronze_documents"]["events_ingested"] == 6
    assert first["bronze_documents"]["events_unreadable"] == 4
    assert first["bronze_documents"]["consumer_lag"] == {f"{topic}/0": 0}
    silver = first["silver_documents"]
    assert (silver["documents_landed"], silver["documents_accepted"], silver["documents_quarantined"]) == (
        6,
        2,
        4,
    )
    documents = {r.path: r for r in lakehouse.read(spark, "silver_documents").collect()}
    assert set(documents) == {event_path(topic, "kayak"), event_path(topic, "stove")}
    stove = documents[event_path(topic, "stove")]
    assert stove.title == "Camp stove care" and stove.media_type == "text/html"
    assert "<p>" not in stove.text and list(stove.access_groups) == ["staff"]  # parsed as a landed .html
    reasons = {r.line: r for r in lakehouse.read(spark, "quarantine_bronze").collect()}
    assert sorted(reasons) == [2, 3, 4, 5]  # the offsets
    assert {r.source_file for r in reasons.values()} == {f"kafka:{topic}/0"}
    assert reasons[2].reason.startswith("invalid JSON")
    assert reasons[3].reason == "document event has no text (a string)"
    assert reasons[4].reason.startswith("unknown media type 'application/pdf'")
    assert "1,000,000-byte limit" in reasons[5].reason

    searcher = champion_searcher(settings)
    hits = searcher.search("how do I store my kayak", k=3)
    assert hits and hits[0].path == event_path(topic, "kayak")
    assert event_path(topic, "stove") in {h.path for h in searcher.search("clean the burner jet", k=3)}

    produce(kafka_broker.bootstrap, topic, [(b"kayak", None)])  # a tombstone deletes the document
    second = materialized(run_documents(settings))
    assert second["bronze_documents"]["events_ingested"] == 1
    assert second["silver_documents"]["documents_deleted"] == 1
    assert {r.path for r in lakehouse.read(spark, "silver_documents").collect()} == {
        event_path(topic, "stove")
    }
    paths = {h.path for h in champion_searcher(settings).search("how do I store my kayak", k=5)}
    assert paths == {event_path(topic, "stove")}


def test_a_declared_documents_topic_without_a_cluster_is_an_error(tmp_path):
    from tests.conftest import make_settings, run_documents

    settings = make_settings(tmp_path / "home", documents_topic="cms.documents")
    Path(settings.documents_landing).mkdir(parents=True)
    result = run_documents(settings, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "GROUNDWORK_KAFKA_BOOTSTRAP" in str(failure.event_specific_data.error)


def test_produce_publishes_document_events_keyed_by_their_id(kafka_broker, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import pipelines.cli as cli

    topic = f"cms-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GROUNDWORK_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("GROUNDWORK_DOCUMENTS_TOPIC", topic)
    events = tmp_path / "events.jsonl"
    events.write_text(
        doc_event("a", "Alpha.").decode() + "\n" + json.dumps({"id": "a", "_deleted": True}) + "\n"
    )
    result = CliRunner().invoke(cli.app, ["produce", "documents", str(events)])  # to the documents topic
    assert result.exit_code == 0, result.output
    got = consume_all(kafka_broker.bootstrap, topic, 2)
    assert [(m.key(), m.value() is None) for m in got] == [(b"a", False), (b"a", True)]  # then a tombstone
    no_id = tmp_path / "no-id.jsonl"
    no_id.write_text(json.dumps({"text": "orphan"}) + "\n")
    result = CliRunner().invoke(cli.app, ["produce", "documents", str(no_id)])
    assert result.exit_code == 2 and f"{no_id}:1: not an object with the key ['id']" in result.output


def test_the_documents_topic_has_its_lag_in_status_and_metrics_and_a_sensor(
    kafka_broker, tmp_path, monkeypatch
):
    """The documents topic is watched as a topic source is, with no topic source in sources.yaml: its lag
    per partition in `groundwork status` and as a /metrics gauge, and ``topics_sensor`` starts the resident
    worker for it or, without the worker, one run of the documents' chain per backlog."""
    from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context
    from prometheus_client import CollectorRegistry, generate_latest
    from typer.testing import CliRunner

    import pipelines.cli as cli
    from pipelines.definitions import build_definitions
    from pipelines.worker import DOCUMENT_ASSETS, WORKER_JOB
    from resources.kafka import topic_source_lags
    from resources.settings import get_settings
    from serving.metrics import ConsumerLagCollector

    topic = f"cms-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GROUNDWORK_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    assert "topics_sensor" not in {s.name for s in build_definitions(get_settings()).sensors}
    monkeypatch.setenv("GROUNDWORK_DOCUMENTS_TOPIC", topic)
    settings = get_settings()
    assert topic_source_lags(settings) == [{"source": "documents", "topic": topic, "lag": {}, "error": None}]
    defs = build_definitions(settings)
    sensor = next(s for s in defs.sensors if s.name == "topics_sensor")
    with DagsterInstance.ephemeral() as instance:
        assert isinstance(sensor(build_sensor_context(instance=instance, definitions=defs)), SkipReason)
        produce(
            kafka_broker.bootstrap, topic, [(b"a", doc_event("a", "Alpha.")), (b"b", doc_event("b", "Beta."))]
        )
        started = sensor(build_sensor_context(instance=instance, definitions=defs))
        assert isinstance(started, RunRequest) and started.job_name == WORKER_JOB
        assert started.tags["groundwork/topics"] == "documents"
    assert topic_source_lags(settings)[0]["lag"] == {0: 2}  # nothing ingested: both are lag

    registry = CollectorRegistry()
    registry.register(ConsumerLagCollector(settings))
    exported = generate_latest(registry).decode()
    assert (
        f'groundwork_kafka_consumer_lag{{partition="0",source="documents",topic="{topic}"}} 2.0' in exported
    )
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    status = CliRunner().invoke(cli.app, ["status", "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.output)["topics"] == [
        {"source": "documents", "topic": topic, "lag": {"0": 2}, "error": None}
    ]

    monkeypatch.setenv("GROUNDWORK_DOCUMENTS_WORKER", "false")
    defs = build_definitions(get_settings())
    sensor = next(s for s in defs.sensors if s.name == "topics_sensor")
    with DagsterInstance.ephemeral() as instance:
        [run] = sensor(build_sensor_context(instance=instance, definitions=defs))
        assert [k.to_user_string() for k in run.asset_selection] == DOCUMENT_ASSETS
        assert run.partition_key is None and run.job_name is None
        [again] = sensor(build_sensor_context(instance=instance, definitions=defs))
        assert again.run_key == run.run_key, "the same backlog (nothing ingested since) is one run"


def test_the_dev_scenario_publishes_sample_documents_and_orders_once_and_they_reach_silver(
    kafka_broker, spark, tmp_path
):
    """What `groundwork dev` sets up on its broker, materialized: the sample events' upserts in silver
    documents, the deleted one gone, the scan quarantined; the sample record-topic source added to the
    default contracts, its orders in silver (the newer version kept, the tombstone's key gone, the negative
    amount quarantined, the counts reconciled); a second set-up publishes nothing again."""
    from assets.documents.topics import event_path
    from assets.structured.contracts import load_sources
    from pipelines.cli import dev_topic_scenario
    from resources.lakehouse import Lakehouse
    from resources.settings import DEFAULT_SOURCES_FILE
    from tests.conftest import _materialize, make_settings, materialized, run_all

    env = {"GROUNDWORK_KAFKA_BOOTSTRAP": kafka_broker.bootstrap}
    env["GROUNDWORK_DOCUMENTS_TOPIC"] = topic = f"samples-{uuid.uuid4().hex[:8]}"
    home = tmp_path / "home"
    said = " ".join(dev_topic_scenario(env, {}, home).split())
    assert "5 sample document events published" in said
    assert "topic source 'web_orders' on 'groundwork.samples.orders': 6 sample records published" in said
    again = {"GROUNDWORK_KAFKA_BOOTSTRAP": kafka_broker.bootstrap, "GROUNDWORK_DOCUMENTS_TOPIC": topic}
    said = " ".join(dev_topic_scenario(again, {}, home).split())  # the next `groundwork dev` session
    assert "0 sample document events published (already published)" in said
    assert "0 sample records published (already published)" in said
    assert env["GROUNDWORK_DOCUMENTS_TOPIC"] == topic and again == env
    contracts = {c.name: c for c in load_sources(env["GROUNDWORK_SOURCES_FILE"])}
    assert set(contracts) == {c.name for c in load_sources(DEFAULT_SOURCES_FILE)} | {"web_orders"}
    assert contracts["web_orders"].topic == "groundwork.samples.orders"
    mine = {**env, "GROUNDWORK_SOURCES_FILE": "/my/sources.yaml"}  # one's own contracts are left alone
    assert (
        "web_orders" not in dev_topic_scenario(mine, {}, home)
        and mine["GROUNDWORK_SOURCES_FILE"] == "/my/sources.yaml"
    )

    settings = make_settings(
        home,
        kafka_bootstrap=kafka_broker.bootstrap,
        documents_topic=topic,
        sources_file=env["GROUNDWORK_SOURCES_FILE"],
    )
    Path(settings.documents_landing).mkdir(parents=True)
    selection = ["bronze_documents", "silver_documents"]
    meta = materialized(_materialize(settings, None, True, None, selection, {}))
    assert meta["bronze_documents"]["events_ingested"] == 5
    assert meta["silver_documents"]["documents_accepted"] == 2
    assert meta["silver_documents"]["documents_quarantined"] == 1
    lakehouse = Lakehouse.from_settings(settings)
    silver = {r.path for r in lakehouse.read(spark, "silver_documents").collect()}
    assert silver == {event_path(topic, "kb-1001"), event_path(topic, "kb-1003")}

    orders = materialized(run_all(settings, selection=["bronze_web_orders", "silver_web_orders"]))
    assert orders["bronze_web_orders"]["messages_ingested"] == 6
    counts = orders["silver_web_orders"]
    assert counts["records_landed"] == 6 and counts["records_quarantined"] == 1
    assert counts["records_accepted"] + counts["records_quarantined"] + counts["records_duplicates"] == 6
    rows = {r.order_id: r for r in lakehouse.read(spark, "silver_web_orders").collect()}
    assert set(rows) == {"WO-1001", "WO-1003"} and rows["WO-1001"].status == "shipped"


def test_the_worker_indexes_document_events_without_a_landed_file(kafka_broker, spark, tmp_path, monkeypatch):
    """The resident worker polls the documents topic's lag too: an event published with nothing landed
    is one documents batch, searchable when it ends."""
    from dagster import DagsterInstance

    from assets.documents.topics import event_path
    from pipelines.definitions import build_definitions
    from pipelines.worker import WORKER_JOB
    from resources.settings import get_settings
    from serving.champion import champion_searcher

    topic = f"cms-{uuid.uuid4().hex[:8]}"
    for name, value in {
        "HOME": tmp_path / "home",
        "KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "DOCUMENTS_TOPIC": topic,
        "SPARK_MASTER": "local[2]",
        "SPARK_SHUFFLE_PARTITIONS": 2,
        "DOCUMENTS_WORKER_POLL_SECONDS": 0.5,
    }.items():
        monkeypatch.setenv(f"GROUNDWORK_{name}", str(value))
    settings = get_settings()
    Path(settings.documents_landing).mkdir(parents=True)
    produce(
        kafka_broker.bootstrap, topic, [(b"kayak", doc_event("kayak", "Store the kayak hull-up on racks."))]
    )
    with DagsterInstance.ephemeral() as instance:
        result = (
            build_definitions(settings)
            .get_job_def(WORKER_JOB)
            .execute_in_process(
                instance=instance,
                run_config={"ops": {"index_landed_documents": {"config": {"idle_exit_seconds": 2}}}},
            )
        )
    assert result.success and result.output_for_node("index_landed_documents") == 1
    hits = champion_searcher(settings).search("kayak storage", k=1)
    assert [h.path for h in hits] == [event_path(topic, "kayak")]


def test_a_documents_run_killed_mid_stream_and_rerun_indexes_each_document_once(
    kafka_broker, spark, tmp_path
):
    """`groundwork run` SIGKILLed (with its JVM) while it streams document events in batches of 2, then the
    documents chain run again: each offset once in bronze, each document once in the index."""
    from collections import Counter

    import lancedb

    from assets.documents.topics import event_path
    from resources.lancedb.tables import open_active
    from tests.conftest import make_settings, run_documents

    topic = f"cms-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        tmp_path / "home",
        kafka_bootstrap=kafka_broker.bootstrap,
        documents_topic=topic,
        kafka_max_offsets_per_batch=2,
    )
    Path(settings.documents_landing).mkdir(parents=True)
    topics = ["kayak racks", "stove jets", "tent seams", "rope coils", "boot laces", "lamp batteries"]
    events = [(f"d{i}".encode(), doc_event(f"d{i}", f"How to care for {t}.")) for i, t in enumerate(topics)]
    produce(kafka_broker.bootstrap, topic, events)
    env = {
        "GROUNDWORK_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "GROUNDWORK_DOCUMENTS_TOPIC": topic,
        "GROUNDWORK_KAFKA_MAX_OFFSETS_PER_BATCH": "2",
        "GROUNDWORK_SPARK_SHUFFLE_PARTITIONS": "2",
    }
    commits = Path(settings.checkpoint_uri) / "bronze_documents_topic" / "commits"
    done = kill_after_first_batch(settings.home, commits, "--select", "bronze_documents", **env)
    assert 1 <= done < 3, f"the kill came after {done} of 3 batches: not mid-stream"

    assert run_documents(settings).success
    bronze = spark.read.format("delta").load(f"{settings.delta_uri}/bronze_documents")
    offsets = sorted(r._offset for r in bronze.where("_topic IS NOT NULL").select("_offset").collect())
    assert offsets == list(range(6)), "each event exactly once in bronze"
    table = open_active(lancedb.connect(settings.lancedb_uri), settings.embeddings_table)
    indexed = Counter(table.search().select(["path"]).limit(None).to_arrow()["path"].to_pylist())
    assert indexed == {event_path(topic, f"d{i}"): 1 for i in range(6)}, "each document once in the index"
