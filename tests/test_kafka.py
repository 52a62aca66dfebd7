"""The Kafka broker as a part of the platform: a real single-node broker (KRaft) from the jar cache, the
Python client and Spark's Kafka source against it, a restart that keeps its data, and a clean stop."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from resources.kafka import SAMPLE_DOCUMENTS_TOPIC, LocalBroker, client_options, cluster_id, spark_options
from resources.settings import Settings


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0, "messages left unsent"


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    got = []
    try:
        for _ in range(int(timeout)):
            for message in consumer.consume(num_messages=expected, timeout=1):
                assert message.error() is None, message.error()
                got.append(message)
            if len(got) >= expected:
                break
    finally:
        consumer.close()
    return got


def test_broker_answers_and_spark_reads_a_topic(kafka_broker, spark):
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    messages = [(f"o{i}".encode(), json.dumps({"order_id": f"o{i}", "amount": i}).encode()) for i in range(5)]
    messages.append((b"o1", None))  # a tombstone keeps its key and a null value
    produce(kafka_broker.bootstrap, topic, messages)

    frame = (
        spark.read.format("kafka")
        .options(**spark_options(kafka_broker.bootstrap, {}))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "partition", "offset")
    )
    rows = sorted(frame.collect(), key=lambda r: r.offset)
    assert [r.offset for r in rows] == list(range(6))
    assert [r.key for r in rows] == ["o0", "o1", "o2", "o3", "o4", "o1"]
    assert json.loads(rows[2].value) == {"order_id": "o2", "amount": 2}
    assert rows[-1].value is None


def test_a_restarted_broker_keeps_its_topics_and_stops_cleanly(tmp_path):
    jars = os.environ.get("GROUNDWORK_SPARK_JARS_DIR", "~/.cache/groundwork/jars")
    broker = LocalBroker(tmp_path / "kafka", jars)
    with broker:
        pid = broker.process.pid
        produce(broker.bootstrap, "kept", [(b"k1", b"v1"), (b"k2", b"v2")])
    assert not broker.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the JVM is gone, not orphaned
    with broker:  # same storage, same ports: formatted once, the log survives
        got = consume_all(broker.bootstrap, "kept", 2)
        assert [(m.key(), m.value()) for m in got] == [(b"k1", b"v1"), (b"k2", b"v2")]
    assert not broker.running


def test_a_broker_that_cannot_start_fails_fast_with_its_reason(tmp_path):
    with pytest.raises(FileNotFoundError, match="make setup"):
        LocalBroker(tmp_path / "kafka", tmp_path / "no-jars").start()


def test_a_cluster_id_is_never_read_as_an_option():
    """One random id in 64 starts with "-", which the storage tool took for an option and refused to start
    the broker; ten thousand ids would hold about 156 of them."""
    ids = [cluster_id() for _ in range(10_000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids) and len(set(ids)) == len(ids)


def test_an_external_cluster_is_configuration(monkeypatch):
    monkeypatch.setenv("GROUNDWORK_KAFKA_BOOTSTRAP", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv(
        "GROUNDWORK_KAFKA_OPTIONS", json.dumps({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"})
    )
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka-1:9093,kafka-2:9093"
    assert spark_options(settings.kafka_bootstrap, settings.kafka_options) == {
        "kafka.bootstrap.servers": "kafka-1:9093,kafka-2:9093",
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "PLAIN",
    }


def test_each_client_gets_the_options_it_knows():
    options = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule required;",
        "ssl.truststore.location": "/etc/kafka/truststore.jks",
        "sasl.username": "groundwork",
        "sasl.password": "secret",
    }
    python = client_options(options)
    assert python == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "groundwork",
        "sasl.password": "secret",
    }
    Producer({"bootstrap.servers": "127.0.0.1:1", **python})  # librdkafka accepts every one of them
    assert set(spark_options("b:9093", options)) == {
        "kafka.bootstrap.servers",
        "kafka.security.protocol",
        "kafka.sasl.mechanism",
        "kafka.sasl.jaas.config",
        "kafka.ssl.truststore.location",
    }


def test_dev_starts_a_local_broker_for_the_ui_and_stops_it_after(tmp_path, monkeypatch):
    """`groundwork dev` without GROUNDWORK_KAFKA_BOOTSTRAP: a broker answers while the UI runs (the UI's
    process is replaced by a probe here), the UI's environment names it, and it is gone afterwards."""
    from typer.testing import CliRunner

    import pipelines.cli as cli
    from resources.kafka import wait_until_answers

    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GROUNDWORK_KAFKA_BOOTSTRAP", raising=False)
    seen = {}

    def ui(command, cwd, env):
        seen["bootstrap"] = env["GROUNDWORK_KAFKA_BOOTSTRAP"]
        wait_until_answers(seen["bootstrap"], timeout=10)  # raises unless the broker answers now
        produce(seen["bootstrap"], "dev-topic", [(b"k", b"v")])
        # The sample topic scenario: declared for the UI's processes, its events already published.
        seen["topic"] = env["GROUNDWORK_DOCUMENTS_TOPIC"]
        seen["events"] = consume_all(seen["bootstrap"], seen["topic"], 5, timeout=10)
        seen["sources"] = env["GROUNDWORK_SOURCES_FILE"]  # the default contracts plus the sample topic source
        seen["orders"] = consume_all(seen["bootstrap"], "groundwork.samples.orders", 6, timeout=10)
        return 0

    monkeypatch.setattr(cli.subprocess, "call", ui)
    result = CliRunner().invoke(cli.app, ["dev"])
    assert result.exit_code == 0, result.output
    assert seen["bootstrap"].startswith("127.0.0.1:")
    assert seen["topic"] == SAMPLE_DOCUMENTS_TOPIC and len(seen["events"]) == 5
    assert seen["sources"] == str(tmp_path / "home" / "dev" / "sources.yaml") and len(seen["orders"]) == 6
    assert "5 sample document events published" in " ".join(result.output.split())
    assert (tmp_path / "home" / "kafka" / "logs" / "meta.properties").exists()
    with pytest.raises(Exception, match="no Kafka broker answered"):
        wait_until_answers(seen["bootstrap"], timeout=3)


def test_dev_leaves_an_external_cluster_alone(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import pipelines.cli as cli

    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GROUNDWORK_KAFKA_BOOTSTRAP", "kafka-1:9093")
    monkeypatch.delenv("GROUNDWORK_DOCUMENTS_TOPIC", raising=False)
    seen = {}
    monkeypatch.setattr(cli.subprocess, "call", lambda command, cwd, env: seen.update(env) or 0)
    assert CliRunner().invoke(cli.app, ["dev"]).exit_code == 0
    assert seen["GROUNDWORK_KAFKA_BOOTSTRAP"] == "kafka-1:9093"
    assert "GROUNDWORK_DOCUMENTS_TOPIC" not in seen  # the sample scenario is the local broker's only
    assert not (tmp_path / "home" / "kafka").exists()


# ---- Messages → bronze records (assets/structured/topics.py) ----------------------------------------


def test_a_message_becomes_a_record_or_a_reason():
    from assets.structured.topics import parse_message

    key = ["order_id"]
    assert parse_message(b"o1", b'{"order_id": "o1", "amount": 12.5, "tags": ["a"]}', key) == (
        "o1",
        '{"order_id": "o1", "amount": 12.5, "tags": ["a"]}',
        {"order_id": "o1", "amount": "12.5", "tags": '["a"]'},
        None,
    )
    # The key fills a key column the value leaves out; a tombstone deletes its key.
    assert parse_message(b"o2", b'{"amount": 1}', key)[2] == {"amount": "1", "order_id": "o2"}
    assert parse_message(b"o3", None, key)[2] == {"order_id": "o3", "_deleted": "true"}
    reasons = {
        "no key": parse_message(None, b'{"order_id": "o4"}', key)[3],
        "bad json": parse_message(b"o5", b'{"order_id": ', key)[3],
        "not object": parse_message(b"o6", b"[1, 2]", key)[3],
        "mismatch": parse_message(b"o7", b'{"order_id": "o8"}', key)[3],
        "too big": parse_message(b"o9", b'{"x": "' + b"a" * 1_000_001 + b'"}', key)[3],
        "utf8": parse_message(b"o10", b'{"x": "\xff"}', key)[3],
        "composite": parse_message(b"o11", b"{}", ["order_id", "line"])[3],
    }
    assert reasons["no key"].startswith("message has no key")
    assert reasons["bad json"].startswith("invalid JSON")
    assert "not an object" in reasons["not object"]
    assert "o7" in reasons["mismatch"] and "o8" in reasons["mismatch"]
    assert "over the 1,000,000-byte limit" in reasons["too big"]
    assert "not valid UTF-8" in reasons["utf8"]
    assert "JSON object of the key columns" in reasons["composite"]
    composite = parse_message(b'{"order_id": "o12", "line": 2}', b'{"sku": "s"}', ["order_id", "line"])
    assert composite[2] == {"sku": "s", "order_id": "o12", "line": "2"}


def test_a_topic_read_by_spark_becomes_bronze_records_with_their_offsets(kafka_broker, spark):
    from assets.structured.topics import parse_kafka_records

    topic = f"orders-{uuid.uuid4().hex[:8]}"
    produce(
        kafka_broker.bootstrap,
        topic,
        [
            (b"o1", b'{"order_id": "o1", "amount": 3}'),
            (None, b'{"order_id": "o2"}'),
            (b"o3", b"not json"),
            (b"o1", None),
        ],
    )
    messages = (
        spark.read.format("kafka")
        .options(**spark_options(kafka_broker.bootstrap, {}))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    rows = {r._offset: r for r in parse_kafka_records(messages, ["order_id"]).collect()}
    assert sorted(rows) == [0, 1, 2, 3]  # every message is a row: none lost
    assert {r._topic for r in rows.values()} == {topic} and {r._partition for r in rows.values()} == {0}
    assert rows[0].record == {"order_id": "o1", "amount": "3"} and rows[0]._error is None
    assert rows[0]._kafka_timestamp is not None and rows[0]._key == "o1"
    assert rows[1].record is None and rows[1]._error.startswith("message has no key")
    assert rows[2]._error.startswith("invalid JSON") and rows[2]._raw == "not json"
    assert rows[3].record == {"order_id": "o1", "_deleted": "true"}


# ---- Lag and lost offsets (resources/kafka.py) ------------------------------------------------------


def test_lag_and_lost_ranges_from_a_real_streaming_checkpoint(kafka_broker, spark, tmp_path):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from assets.structured.topics import checkpoint_offsets
    from resources.kafka import (
        OffsetsLost,
        UnknownTopic,
        check_offsets_available,
        consumer_lag,
        source_lag,
        watermarks,
    )

    topic = f"lag-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for i in range(6):
        producer.produce(topic, key=f"k{i}".encode(), value=b"{}", partition=i % 2)
    assert producer.flush(30) == 0

    checkpoint = tmp_path / "checkpoint"
    query = (
        spark.readStream.format("kafka")
        .options(**spark_options(kafka_broker.bootstrap, {}))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .writeStream.format("noop")
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(120)
    processed = checkpoint_offsets(str(checkpoint), topic)
    assert processed == {0: 3, 1: 3}
    for _ in range(4):  # 4 more, not yet processed
        producer.produce(topic, key=b"x", value=b"{}", partition=0)
    assert producer.flush(30) == 0
    marks = watermarks(kafka_broker.bootstrap, topic)
    assert consumer_lag(marks, processed) == {0: 4, 1: 0}
    check_offsets_available(topic, marks, processed)  # nothing lost yet

    # Retention passes over offsets 0..4 of partition 0 (3 and 4 never processed): named, not skipped.
    futures = admin.delete_records([TopicPartition(topic, 0, 5)])
    for future in futures.values():
        future.result(30)
    with pytest.raises(OffsetsLost, match=r"partition 0: offsets 3\.\.4 \(2 messages\) are no longer stored"):
        check_offsets_available(topic, watermarks(kafka_broker.bootstrap, topic), processed)

    # The topic deleted and recreated empty: its end is before what was processed.
    admin.delete_topics([topic])[topic].result(30)
    for _ in range(60):
        try:
            admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
            break
        except Exception:  # still being deleted
            time.sleep(0.5)
    for _ in range(60):  # until the new, empty topic is the one the broker serves
        try:
            marks = watermarks(kafka_broker.bootstrap, topic)
        except UnknownTopic:  # the broker's metadata does not list the new topic yet
            marks = None
        if marks == {0: (0, 0), 1: (0, 0)}:
            break
        time.sleep(0.5)
    recreated = r"partition 1: offsets up to 2 were processed but the topic now ends at -1"
    with pytest.raises(OffsetsLost, match=recreated):
        check_offsets_available(topic, marks, processed)
    # The lag the worker, status and bronze read never shows 0 for it: it names the loss too.
    with pytest.raises(OffsetsLost, match=recreated):
        source_lag(kafka_broker.bootstrap, {}, topic, str(checkpoint))


def test_produce_publishes_a_file_keyed_by_the_sources_primary_key(kafka_broker, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import pipelines.cli as cli

    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GROUNDWORK_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    topic = f"customers-{uuid.uuid4().hex[:8]}"
    records = tmp_path / "customers.jsonl"
    records.write_text(
        '{"customer_id": "c1", "name": "Ada"}\n\n{"customer_id": "c2", "name": "Bo"}\n'
        '{"customer_id": "c1", "_deleted": true}\n'
    )
    result = CliRunner().invoke(cli.app, ["produce", "customers", str(records), "--topic", topic])
    assert result.exit_code == 0, result.output
    assert "published 3 messages" in result.output
    got = consume_all(kafka_broker.bootstrap, topic, 3)
    assert [(m.key(), m.value() and json.loads(m.value())) for m in got] == [
        (b"c1", {"customer_id": "c1", "name": "Ada"}),
        (b"c2", {"customer_id": "c2", "name": "Bo"}),
        (b"c1", None),  # the tombstone
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "no key"}\n')
    result = CliRunner().invoke(cli.app, ["produce", "customers", str(bad), "--topic", topic])
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output
    not_json = tmp_path / "not-json.jsonl"
    not_json.write_text('{"customer_id": "c3"}\n{oops\n')
    result = CliRunner().invoke(cli.app, ["produce", "customers", str(not_json), "--topic", topic])
    assert result.exit_code == 2 and "not-json.jsonl:2: not JSON" in result.output
    after = consume_all(kafka_broker.bootstrap, topic, 4, timeout=3)
    assert [m.offset() for m in after] == [0, 1, 2]  # a bad file sends nothing, not even its good lines
    assert CliRunner().invoke(cli.app, ["produce", "nope", str(records)]).exit_code == 2


# ---- Topic → bronze, exactly once (assets/structured/topics.py ingest_topic) -------------------------


def test_a_topic_streams_into_bronze_exactly_once_even_when_a_batch_is_replayed(
    kafka_broker, spark, tmp_path
):
    from assets.structured.contracts import SourceContract
    from assets.structured.topics import ingest_topic
    from resources.lakehouse import Lakehouse
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "home")
    lakehouse = Lakehouse.from_settings(settings)
    contract = SourceContract(
        name="orders",
        format="jsonl",
        primary_key=["order_id"],
        columns=[{"name": "order_id", "required": True}, {"name": "amount", "type": "double"}],
    )
    topic = f"orders-{uuid.uuid4().hex[:8]}"

    def ingest(run: str) -> int:
        return ingest_topic(
            spark, lakehouse, contract, topic, kafka_broker.bootstrap, {}, run, "2026-12-04", 3
        )

    def bronze():
        rows = lakehouse.read(spark, "bronze_orders").collect()
        return sorted((r._partition, r._offset) for r in rows), rows

    produce(kafka_broker.bootstrap, topic, [(f"o{i}".encode(), b'{"amount": 1}') for i in range(5)])
    assert ingest("r1") == 2  # 5 messages, at most 3 per batch
    offsets, rows = bronze()
    assert offsets == [(0, i) for i in range(5)]
    assert {r.record["order_id"] for r in rows} == {f"o{i}" for i in range(5)}

    produce(kafka_broker.bootstrap, topic, [(b"o5", b"not json"), (b"o1", None)])
    assert ingest("r2") == 1
    offsets, rows = bronze()
    assert offsets == [(0, i) for i in range(7)]
    by_offset = {r._offset: r for r in rows}
    assert by_offset[5]._error.startswith("invalid JSON") and by_offset[6].record["_deleted"] == "true"

    # A crash after the Delta commit and before the checkpoint's commit: Spark replays the last batch on
    # restart, and its transaction id makes Delta skip it.
    commits = Path(lakehouse.checkpoint_path("bronze_orders")) / "commits"
    last = max(commits.glob("[0-9]*"), key=lambda p: int(p.name))
    last.unlink()
    (commits / f".{last.name}.crc").unlink(missing_ok=True)  # Hadoop's checksum beside it
    assert ingest("r3") == 1  # the batch ran again ...
    assert bronze()[0] == [(0, i) for i in range(7)]  # ... and appended nothing twice
    assert ingest("r4") == 0  # nothing new


def test_the_broker_stopped_and_restarted_mid_stream_loses_and_repeats_nothing(kafka_broker, spark, tmp_path):
    import threading

    from assets.structured.contracts import SourceContract
    from assets.structured.topics import ingest_topic
    from resources.lakehouse import Lakehouse
    from tests.conftest import make_settings

    lakehouse = Lakehouse.from_settings(make_settings(tmp_path / "home"))
    contract = SourceContract(
        name="events", format="jsonl", primary_key=["event_id"], columns=[{"name": "event_id"}]
    )
    topic = f"events-{uuid.uuid4().hex[:8]}"
    produce(kafka_broker.bootstrap, topic, [(f"e{i}".encode(), b"{}") for i in range(6)])
    outcome = {}

    def run() -> None:
        try:
            outcome["batches"] = ingest_topic(
                spark, lakehouse, contract, topic, kafka_broker.bootstrap, {}, "r1", "2026-12-04", 2
            )
        except Exception as exc:  # reported below
            outcome["error"] = exc

    stream = threading.Thread(target=run)
    stream.start()
    checkpoint = Path(lakehouse.checkpoint_path("bronze_events")) / "commits"
    for _ in range(600):  # until some batches, not all, are committed
        if len(list(checkpoint.glob("[0-9]*"))) >= 1:
            break
        time.sleep(0.05)
    kafka_broker.stop()
    time.sleep(1)
    kafka_broker.start()
    stream.join(240)
    assert not stream.is_alive()
    if "error" in outcome:  # a run that gave up while the broker was away: the next run resumes
        ingest_topic(spark, lakehouse, contract, topic, kafka_broker.bootstrap, {}, "r2", "2026-12-04", 1)
    offsets = sorted(r._offset for r in lakehouse.read(spark, "bronze_events").collect())
    assert offsets == list(range(6))


# ---- Topic sources declared in sources.yaml: bronze and silver as Dagster assets ---------------------

ORDERS_SOURCE = """
sources:
  - name: orders
    topic: {topic}
    primary_key: [order_id]
    event_time: updated_at
    description: Web-shop orders, as the shop publishes them.
    columns:
      - {{name: order_id, type: string, required: true}}
      - {{name: amount, type: double, required: true, min: 0}}
      - {{name: status, type: string, allowed: [new, paid]}}
      - {{name: email, type: string, pii: token}}
      - {{name: updated_at, type: timestamp, required: true}}
"""


def kill_after_first_batch(home: Path, commits: Path, *run_args: str, **env: str) -> int:
    """Start `groundwork run *run_args` in its own process group, SIGKILL it (and its JVM) as soon as the
    stream's checkpoint has committed a batch, and return how many batches it had committed."""
    import signal
    import subprocess

    from tests.conftest import groundwork_command, groundwork_env

    run = subprocess.Popen(
        groundwork_command("run", *run_args),
        env=groundwork_env(home, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes the JVM with it
    )
    try:
        deadline = time.monotonic() + 300
        while not any(commits.glob("[0-9]*")) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(30)
    return len(list(commits.glob("[0-9]*")))


def order(order_id: str, updated_at: str, amount: float = 10.0, **extra) -> bytes:
    record = {"order_id": order_id, "amount": amount, "status": "new", "updated_at": updated_at, **extra}
    return json.dumps(record).encode()


@pytest.fixture
def topic_home(kafka_broker, tmp_path):
    """A home whose sources.yaml declares one topic source, ``orders``, on a fresh topic."""
    from tests.conftest import make_settings

    topic = f"orders-{uuid.uuid4().hex[:8]}"
    sources = tmp_path / "sources.yaml"
    sources.write_text(ORDERS_SOURCE.format(topic=topic))
    settings = make_settings(tmp_path / "home", sources_file=sources, kafka_bootstrap=kafka_broker.bootstrap)
    return settings, topic


def test_a_topic_source_flows_through_bronze_and_the_same_silver_merge(topic_home, kafka_broker, spark):
    from dagster import DagsterInstance

    from assets.quarantine import INGESTION_RUNS_TABLE
    from resources.lakehouse import Lakehouse
    from tests.conftest import materialized, run_all

    settings, topic = topic_home
    lakehouse = Lakehouse.from_settings(settings)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "message.max.bytes": 2_000_000})
    sent = [
        (b"o1", order("o1", "2026-12-01 10:00:00")),
        (b"o2", order("o2", "2026-12-01 10:00:00")),
        (b"o1", order("o1", "2026-12-01 11:00:00", amount=12.0, email="ada@example.com")),  # later: wins
        (b"o3", b'{"order_id": "o3", '),  # invalid JSON
        (b"o4", order("o4", "2026-12-01 10:00:00", amount=-1)),  # breaks the contract (min 0)
        (b"o5", order("o5", "2026-12-01 10:00:00", coupon="XMAS")),  # unknown field, drift policy reject
        (None, order("o6", "2026-12-01 10:00:00")),  # no key
        (b"o7", order("o7", "2026-12-01 10:00:00", note="x" * 1_000_001)),  # over 1 MB
    ]
    # Enough good messages that the bronze gate (90% of records with a key) passes with 2 keyless ones.
    sent += [(f"f{i}".encode(), order(f"f{i}", "2026-12-01 10:00:00")) for i in range(12)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    selection = ["bronze_orders", "silver_orders"]
    with DagsterInstance.ephemeral() as instance:
        first = materialized(run_all(settings, instance, selection=selection))
        assert first["bronze_orders"]["messages_ingested"] == 20
        assert first["bronze_orders"]["consumer_lag"] == {f"{topic}/0": 0}
        assert first["silver_orders"]["records_landed"] == 20  # offsets consumed ...
        assert first["silver_orders"]["records_accepted"] == 14  # ... = accepted
        assert first["silver_orders"]["records_quarantined"] == 5  # + quarantined
        assert first["silver_orders"]["records_duplicates"] == 1  # + duplicates (o1's first version)

        silver = {r.order_id: r for r in lakehouse.read(spark, "silver_orders").collect()}
        assert set(silver) == {"o1", "o2", *(f"f{i}" for i in range(12))}
        assert silver["o1"].amount == 12.0 and (silver["o1"]._partition, silver["o1"]._offset) == (0, 2)
        assert silver["o1"]._topic == topic and "_source_file" not in silver["o1"].asDict()
        assert silver["o1"].email and "ada@" not in silver["o1"].email  # PII tokenised as for files
        quarantined = lakehouse.read(spark, "quarantine_bronze").unionByName(
            lakehouse.read(spark, "quarantine_silver")
        )
        reasons = {r.line: r for r in quarantined.collect()}
        assert sorted(reasons) == [3, 4, 5, 6, 7]  # the offsets
        assert {r.source_file for r in reasons.values()} == {f"kafka:{topic}/0"}
        assert reasons[3].reason.startswith("invalid JSON")
        assert "below the minimum" in reasons[4].reason
        assert "unexpected column(s) coupon" in reasons[5].reason
        assert reasons[6].reason.startswith("message has no key")
        assert "1,000,000-byte limit" in reasons[7].reason

        # A tombstone deletes its key; an older version arriving late loses to silver's newer one.
        produce(
            kafka_broker.bootstrap,
            topic,
            [
                (b"o2", None),
                (b"o1", order("o1", "2026-12-01 09:00:00", amount=1.0)),
                (b"o8", order("o8", "2026-12-02 10:00:00")),
            ],
        )
        second = materialized(run_all(settings, instance, selection=selection))
        assert second["bronze_orders"]["messages_ingested"] == 3
        counts = {k: second["silver_orders"][f"records_{k}"] for k in ("landed", "accepted", "duplicates")}
        assert counts == {"landed": 3, "accepted": 2, "duplicates": 1}
        assert second["silver_orders"]["records_deleted"] == 1
        silver = {r.order_id: r for r in lakehouse.read(spark, "silver_orders").collect()}
        assert "o2" not in silver and "o8" in silver and silver["o1"].amount == 12.0
        runs = lakehouse.read_arrow(INGESTION_RUNS_TABLE).to_pandas()
        assert sorted(runs.landed) == [3, 20] and set(runs.source) == {"orders"}

        third = materialized(run_all(settings, instance, selection=selection))  # nothing new
        assert third["bronze_orders"]["messages_ingested"] == 0
        assert lakehouse.row_count("bronze_orders") == 23


def test_consumer_lag_per_partition_in_status_and_metrics(topic_home, kafka_broker, monkeypatch):
    """Lag = latest offset minus what bronze has ingested, per partition, read without Spark: in
    `groundwork status` and as a /metrics gauge; a cluster that does not answer is named, not waited on."""
    from prometheus_client import CollectorRegistry, generate_latest
    from typer.testing import CliRunner

    import pipelines.cli as cli
    from resources.kafka import topic_source_lags
    from serving.metrics import ConsumerLagCollector

    settings, topic = topic_home
    assert topic_source_lags(settings) == [
        {"source": "orders", "topic": topic, "lag": {}, "error": None}  # no such topic yet: no partitions
    ]
    records = settings.home / "orders.jsonl"
    records.parent.mkdir(parents=True, exist_ok=True)
    records.write_text("".join(json.dumps({"order_id": f"o{i}"}) + "\n" for i in range(3)))
    monkeypatch.setenv("GROUNDWORK_SOURCES_FILE", str(settings.sources_file))
    monkeypatch.setenv("GROUNDWORK_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    published = CliRunner().invoke(cli.app, ["produce", "orders", str(records)])  # to the source's topic:
    assert published.exit_code == 0 and repr(topic) in published.output, published.output
    assert topic_source_lags(settings)[0]["lag"] == {0: 3}  # nothing ingested: all 3 are lag

    registry = CollectorRegistry()
    registry.register(ConsumerLagCollector(settings))
    exported = generate_latest(registry).decode()
    assert f'groundwork_kafka_consumer_lag{{partition="0",source="orders",topic="{topic}"}} 3.0' in exported

    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    result = CliRunner().invoke(cli.app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["topics"] == [
        {"source": "orders", "topic": topic, "lag": {"0": 3}, "error": None}
    ]

    away = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    started = time.monotonic()
    [row] = topic_source_lags(away, timeout=1.0)
    assert row["lag"] is None and row["error"] and time.monotonic() - started < 10
    assert (
        "GROUNDWORK_KAFKA_BOOTSTRAP"
        in topic_source_lags(away.model_copy(update={"kafka_bootstrap": ""}))[0]["error"]
    )


def test_a_source_is_a_file_or_a_topic():
    from pydantic import ValidationError

    from assets.structured.contracts import SourceContract

    columns = [{"name": "order_id"}]
    topic = SourceContract(name="orders", topic="shop.orders", primary_key=["order_id"], columns=columns)
    assert topic.format == "jsonl" and topic.provenance == ["_topic", "_partition", "_offset"]
    file = SourceContract(name="orders", format="csv", primary_key=["order_id"], columns=columns)
    assert file.topic is None and file.provenance == ["_source_file", "_line"]
    with pytest.raises(ValidationError, match="declare a file format"):
        SourceContract(name="orders", primary_key=["order_id"], columns=columns)
    with pytest.raises(ValidationError, match="cannot apply"):
        SourceContract(name="orders", format="csv", topic="t", primary_key=["order_id"], columns=columns)


def test_the_worker_keeps_up_with_a_topic_source(topic_home, kafka_broker, spark, monkeypatch):
    """The sensor starts the resident worker when a topic has lag; the worker ingests each backlog into
    bronze and silver in its own run, and a message published while it runs arrives without a new start."""
    import threading

    from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context

    from pipelines.definitions import build_definitions
    from pipelines.worker import TOPICS_BATCH_JOB, WORKER_JOB, WORKER_TAG
    from resources.lakehouse import Lakehouse
    from resources.settings import get_settings

    configured, topic = topic_home
    for name, value in {
        "HOME": configured.home,
        "SOURCES_FILE": configured.sources_file,
        "KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "SPARK_MASTER": configured.spark_master,
        "SPARK_SHUFFLE_PARTITIONS": configured.spark_shuffle_partitions,
        "DOCUMENTS_WORKER_POLL_SECONDS": 0.5,
    }.items():
        monkeypatch.setenv(f"GROUNDWORK_{name}", str(value))
    settings = get_settings()
    defs = build_definitions(settings)
    sensor = next(s for s in defs.sensors if s.name == "topics_sensor")
    assert not any(s.name == "orders_landing_sensor" for s in defs.sensors), "a topic has no landing zone"
    lakehouse = Lakehouse.from_settings(settings)

    def silver_keys() -> set[str]:
        if not lakehouse.exists("silver_orders"):
            return set()
        return set(lakehouse.read_arrow("silver_orders", ["order_id"])["order_id"].to_pylist())

    with DagsterInstance.ephemeral() as instance:
        assert isinstance(sensor(build_sensor_context(instance=instance, definitions=defs)), SkipReason)
        produce(
            kafka_broker.bootstrap,
            topic,
            [(f"o{i}".encode(), order(f"o{i}", "2026-12-01 10:00")) for i in range(3)],
        )
        request = sensor(build_sensor_context(instance=instance, definitions=defs))
        assert isinstance(request, RunRequest) and request.job_name == WORKER_JOB

        def publish_while_running() -> None:  # after the worker's first batch
            deadline = time.monotonic() + 300
            while silver_keys() != {"o0", "o1", "o2"} and time.monotonic() < deadline:
                time.sleep(0.3)
            produce(kafka_broker.bootstrap, topic, [(b"o1", None), (b"o3", order("o3", "2026-12-01 10:00"))])

        publisher = threading.Thread(target=publish_while_running, daemon=True)
        publisher.start()
        result = defs.get_job_def(WORKER_JOB).execute_in_process(
            instance=instance,
            run_config={"ops": {"index_landed_documents": {"config": {"idle_exit_seconds": 6}}}},
        )
        publisher.join(timeout=5)
        assert result.success
        assert result.output_for_node("index_landed_documents") == 2, "one batch per backlog"
        batches = [
            r for r in instance.get_run_records() if r.dagster_run.tags.get(WORKER_TAG) == result.run_id
        ]
        assert {r.dagster_run.job_name for r in batches} == {TOPICS_BATCH_JOB}
        assert all(r.dagster_run.status.value == "SUCCESS" for r in batches) and len(batches) == 2
    assert silver_keys() == {"o0", "o2", "o3"}
    assert sorted(lakehouse.read_arrow("bronze_orders", ["_offset"])["_offset"].to_pylist()) == list(range(5))


def test_a_consuming_run_killed_mid_batch_and_rerun_takes_each_message_once(topic_home, kafka_broker, spark):
    """`groundwork run` SIGKILLed (with its JVM) while it streams a topic in batches of 2, then run again:
    every offset is in bronze exactly once and every key in silver."""

    from tests.conftest import run_all

    settings, topic = topic_home
    settings = settings.model_copy(update={"kafka_max_offsets_per_batch": 2})
    produce(
        kafka_broker.bootstrap,
        topic,
        [(f"o{i:02}".encode(), order(f"o{i:02}", "2026-12-01 10:00")) for i in range(12)],
    )
    env = {
        "GROUNDWORK_SOURCES_FILE": str(settings.sources_file),
        "GROUNDWORK_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "GROUNDWORK_KAFKA_MAX_OFFSETS_PER_BATCH": "2",
        "GROUNDWORK_SPARK_SHUFFLE_PARTITIONS": "2",
    }
    commits = Path(settings.checkpoint_uri) / "bronze_orders" / "commits"
    done = kill_after_first_batch(
        settings.home, commits, "--select", "bronze_orders", "--select", "silver_orders", **env
    )
    assert 1 <= done < 6, f"the kill came after {done} of 6 batches: not mid-stream"

    result = run_all(settings, selection=["bronze_orders", "silver_orders"])
    assert result.success
    offsets = lakehouse_offsets(settings, spark)
    assert offsets == list(range(12)), "each message exactly once in bronze"
    silver = {
        r.order_id for r in spark.read.format("delta").load(f"{settings.delta_uri}/silver_orders").collect()
    }
    assert silver == {f"o{i:02}" for i in range(12)}


def lakehouse_offsets(settings, spark) -> list[int]:
    bronze = spark.read.format("delta").load(f"{settings.delta_uri}/bronze_orders")
    return sorted(r._offset for r in bronze.select("_offset").collect())


def test_without_the_worker_the_topics_sensor_runs_bronze_once_per_backlog(
    topic_home, kafka_broker, monkeypatch
):
    from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context

    from assets.structured.assets import current_ingest_day
    from pipelines.definitions import build_definitions
    from resources.settings import get_settings

    configured, topic = topic_home
    monkeypatch.setenv("GROUNDWORK_HOME", str(configured.home))
    monkeypatch.setenv("GROUNDWORK_SOURCES_FILE", str(configured.sources_file))
    monkeypatch.setenv("GROUNDWORK_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("GROUNDWORK_DOCUMENTS_WORKER", "false")
    defs = build_definitions(get_settings())
    sensor = next(s for s in defs.sensors if s.name == "topics_sensor")
    with DagsterInstance.ephemeral() as instance:
        assert isinstance(sensor(build_sensor_context(instance=instance, definitions=defs)), SkipReason)
        produce(kafka_broker.bootstrap, topic, [(b"o1", order("o1", "2026-12-01 10:00"))])
        [first] = sensor(build_sensor_context(instance=instance, definitions=defs))
        assert isinstance(first, RunRequest) and first.job_name is None
        assert [k.to_user_string() for k in first.asset_selection] == ["bronze_orders"]
        assert first.partition_key == current_ingest_day()
        produce(kafka_broker.bootstrap, topic, [(b"o2", order("o2", "2026-12-01 10:00"))])
        [again] = sensor(build_sensor_context(instance=instance, definitions=defs))
        assert again.run_key == first.run_key, "the same backlog (nothing ingested since) is one run"
