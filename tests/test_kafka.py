"""The Kafka broker as a part of the platform: a real single-node broker (KRaft) from the jar cache, the
Python client and Spark's Kafka source against it, a restart that keeps its data, and a clean stop."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from resources.kafka import LocalBroker, client_options, spark_options
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
        return 0

    monkeypatch.setattr(cli.subprocess, "call", ui)
    result = CliRunner().invoke(cli.app, ["dev"])
    assert result.exit_code == 0, result.output
    assert seen["bootstrap"].startswith("127.0.0.1:")
    assert (tmp_path / "home" / "kafka" / "logs" / "meta.properties").exists()
    with pytest.raises(Exception, match="no Kafka broker answered"):
        wait_until_answers(seen["bootstrap"], timeout=3)


def test_dev_leaves_an_external_cluster_alone(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import pipelines.cli as cli

    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GROUNDWORK_KAFKA_BOOTSTRAP", "kafka-1:9093")
    seen = {}
    monkeypatch.setattr(cli.subprocess, "call", lambda command, cwd, env: seen.update(env) or 0)
    assert CliRunner().invoke(cli.app, ["dev"]).exit_code == 0
    assert seen["GROUNDWORK_KAFKA_BOOTSTRAP"] == "kafka-1:9093"
    assert not (tmp_path / "home" / "kafka").exists()
