"""Kafka: the local broker (KRaft, one JVM) and the options every client of a cluster gets.

The local broker runs from the jars ``make setup`` fetches into ``<jars>/kafka-broker`` (Apache Kafka 4.4,
broker and controller in one process, listeners on 127.0.0.1 only). ``groundwork dev`` starts one when
``GROUNDWORK_KAFKA_BOOTSTRAP`` is not set, and tests start one per session. An external cluster is
configuration: its bootstrap servers and the client options (SASL, TLS) in ``GROUNDWORK_KAFKA_OPTIONS``,
passed to Spark's Kafka source (as ``kafka.<option>``) and to the Python clients as they are.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from resources.settings import Settings

BROKER_JARS_HINT = "run `make setup` (it fetches the Kafka broker's jars into the jar cache)"
SPARK_JARS_HINT = "run `make setup` (it fetches Spark's Kafka connector into the jar cache)"
# 256 MB heap: measured about 365 MB resident on these machines; 192 MB died with OutOfMemoryError at start.
BROKER_HEAP = "-Xmx256m"


def broker_jars_dir(jars_dir: Path | str) -> Path:
    folder = Path(jars_dir).expanduser() / "kafka-broker"
    if not any(folder.glob("kafka_2.13-*.jar")):
        raise FileNotFoundError(f"No Kafka broker jar in {folder}: {BROKER_JARS_HINT}")
    return folder


def kafka_spark_jars(jars_dir: Path | str) -> list[str]:
    """Spark's Kafka source, its token provider, kafka-clients and commons-pool2 (``<jars>/kafka-spark``)."""
    folder = Path(jars_dir).expanduser() / "kafka-spark"
    jars = sorted(str(p) for p in folder.glob("*.jar"))
    if not any(Path(j).name.startswith("spark-sql-kafka-") for j in jars):
        raise FileNotFoundError(f"No spark-sql-kafka jar in {folder}: {SPARK_JARS_HINT}")
    return jars


# Options only the Java client knows (Spark's source) and only librdkafka knows (the Python clients): each
# side refuses the other's, so one setting can carry both spellings and each client gets its own.
JAVA_ONLY = ("sasl.jaas.config", "ssl.truststore.", "ssl.keystore.", "ssl.key.password", "sasl.login.")
LIBRDKAFKA_ONLY = (
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
)


def _drop(options: dict[str, str], prefixes: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in options.items() if not k.startswith(prefixes)}


def client_options(options: dict[str, str]) -> dict[str, str]:
    """Options for the Python clients (librdkafka names: ``security.protocol``, ``sasl.mechanism`` ...)."""
    return _drop(options, JAVA_ONLY)


def spark_options(bootstrap: str, options: dict[str, str]) -> dict[str, str]:
    """Options for Spark's Kafka source and sink: each Java client option as ``kafka.<name>``."""
    java = _drop(options, LIBRDKAFKA_ONLY)
    return {"kafka.bootstrap.servers": bootstrap, **{f"kafka.{k}": v for k, v in java.items()}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_id() -> str:
    """A KRaft cluster id: a random UUID, base64 URL-safe without padding (what ``random-uuid`` prints).
    Like Kafka's own ``Uuid.randomUuid``, never one that starts with ``-``: the storage tool would read it
    as an option ("argument --cluster-id/-t: expected one argument"), one broker start in 64."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data_dir / 'logs'}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # One message may be up to 1 MB plus headers; larger ones are refused at produce time.
            "message.max.bytes=1048588",
            "",
        ]
    )


@dataclass
class LocalBroker:
    """A single-node Kafka broker on 127.0.0.1 with its storage under ``data_dir``.

    ``start()`` formats the storage once (kept across restarts, so topics and offsets survive a
    ``stop()``/``start()``), starts the JVM and returns when a client gets the cluster's metadata.
    """

    data_dir: Path
    jars_dir: Path | str
    port: int = 0
    controller_port: int = 0
    java: str = "java"
    process: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def _java(self, main: str, *args: str) -> list[str]:
        classpath = str(broker_jars_dir(self.jars_dir) / "*")  # a glob Java expands itself
        return [self.java, BROKER_HEAP, "-XX:+UseSerialGC", "-cp", classpath, main, *args]

    def format(self) -> None:
        """Write ``server.properties`` and format the KRaft storage, once."""
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(server_properties(self.data_dir, self.port, self.controller_port))
        properties = str(self.properties_file)
        command = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", properties)
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"Kafka storage format failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self, timeout: float = 90.0) -> LocalBroker:
        if self.running:
            return self
        self.format()
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                self._java("kafka.Kafka", str(self.properties_file)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
            )
        try:
            wait_until_answers(self.bootstrap, timeout, process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it has not exited within ``timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def wait_until_answers(
    bootstrap: str, timeout: float, options: dict[str, str] | None = None, process=None
) -> None:
    """Return when the cluster at ``bootstrap`` lists its brokers; raise after ``timeout`` seconds."""
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    # log_level 0: no "connection refused" lines on stderr while it starts.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, **client_options(options or {})})
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Kafka broker exited with {process.returncode} at start")
        try:
            if admin.list_topics(timeout=2).brokers:
                return
        except Exception as e:  # KafkaException while it starts
            last = e
        time.sleep(0.3)
    raise TimeoutError(f"no Kafka broker answered at {bootstrap} within {timeout:.0f} s ({last})")


def local_broker_from_env(home: Path, jars_dir: Path | str) -> LocalBroker | None:
    """The broker ``groundwork dev`` starts: none when ``GROUNDWORK_KAFKA_BOOTSTRAP`` names a cluster."""
    if os.environ.get("GROUNDWORK_KAFKA_BOOTSTRAP"):
        return None
    return LocalBroker(Path(home) / "kafka", jars_dir)


def checkpoint_offsets(checkpoint: str, topic: str) -> dict[int, int]:
    """The next offset per partition of ``topic`` that a Structured Streaming checkpoint (a local folder)
    records as planned: the last file of ``offsets/``, whose last line is the Kafka source's offsets."""
    folder = Path(checkpoint) / "offsets"
    batches = sorted((int(p.name) for p in folder.glob("*") if p.name.isdigit()), reverse=True)
    for batch in batches:
        lines = (folder / str(batch)).read_text().strip().splitlines()
        for line in reversed(lines):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and topic in value:
                return {int(p): int(o) for p, o in value[topic].items()}
    return {}


def source_lag(
    bootstrap: str, options: dict[str, str], topic: str, checkpoint: str, timeout: float = 10.0
) -> dict[int, int] | None:
    """Per partition: the latest offset of ``topic`` minus the next one its bronze checkpoint will read.
    None when the topic does not exist (yet): nothing was published to it. Raises ``OffsetsLost`` when
    the checkpoint's next offsets are no longer stored (a lag of 0 must never hide a recreated topic)."""
    processed = checkpoint_offsets(checkpoint, topic)
    try:
        marks = watermarks(bootstrap, topic, options, timeout)
    except UnknownTopic:
        if processed:
            raise OffsetsLost(
                f"Kafka topic {topic!r} no longer exists; its bronze had processed offsets {processed}"
            ) from None
        return None
    check_offsets_available(topic, marks, processed)
    return consumer_lag(marks, processed)


# Where ``bronze_documents`` keeps its stream of the documents topic; its row in the lags is "documents".
DOCUMENTS_TOPIC_CHECKPOINT = "bronze_documents_topic"
DOCUMENTS_TOPIC_SOURCE = "documents"


def topic_streams(settings: Settings) -> list[tuple[str, str, str]]:
    """(source, topic, bronze checkpoint name) of every topic the pipeline consumes: each topic source of
    ``sources.yaml``, then the documents topic when one is set."""
    from assets.structured.contracts import load_sources

    streams = []
    if Path(settings.sources_file).is_file():
        streams = [
            (s.name, s.topic, f"bronze_{s.name}") for s in load_sources(settings.sources_file) if s.topic
        ]
    if settings.documents_topic:
        streams.append((DOCUMENTS_TOPIC_SOURCE, settings.documents_topic, DOCUMENTS_TOPIC_CHECKPOINT))
    return streams


def topic_source_lags(settings: Settings, timeout: float = 2.0) -> list[dict]:
    """For `groundwork status`, /metrics and ``topics_sensor``: per consumed topic (``topic_streams``), its
    lag per partition, or why it is not known (no cluster configured, the cluster not answering within
    ``timeout``). Starts no JVM."""
    from resources.lakehouse import Lakehouse

    streams = topic_streams(settings)
    lakehouse = Lakehouse.from_settings(settings) if streams else None
    rows = []
    for source, topic, checkpoint_name in streams:
        row: dict = {"source": source, "topic": topic, "lag": None, "error": None}
        if not settings.kafka_bootstrap:
            row["error"] = NO_CLUSTER_HINT
        else:
            checkpoint = lakehouse.checkpoint_path(checkpoint_name)
            try:
                lag = source_lag(settings.kafka_bootstrap, settings.kafka_options, topic, checkpoint, timeout)
                row["lag"] = lag or {}
            except Exception as exc:  # a cluster that does not answer: say so, never hang the caller
                row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


class UnknownTopic(RuntimeError):
    """The cluster has no such topic."""


class OffsetsLost(RuntimeError):
    """Messages a consumer has not processed are gone from the topic (retention passed, topic recreated)."""


def watermarks(
    bootstrap: str, topic: str, options: dict[str, str] | None = None, timeout: float = 10.0
) -> dict[int, tuple[int, int]]:
    """Per partition of ``topic``: (earliest offset still stored, next offset to be written)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "groundwork-watermarks",
            "enable.auto.commit": False,
            "log_level": 0,
            **client_options(options or {}),
        }
    )
    try:
        from confluent_kafka import KafkaError

        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or (
            metadata.error is not None and metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            raise UnknownTopic(f"Kafka topic {topic!r} does not exist")
        if metadata.error is not None:
            raise RuntimeError(f"Kafka topic {topic!r}: {metadata.error.str()}")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            for p in sorted(metadata.partitions)
        }
    finally:
        consumer.close()


def consumer_lag(marks: dict[int, tuple[int, int]], processed: dict[int, int]) -> dict[int, int]:
    """Per partition: the latest offset minus what was processed (``processed``: the next offset to read,
    as Spark's checkpoint records it; a partition never read counts from its earliest stored offset)."""
    return {p: max(0, high - processed.get(p, low)) for p, (low, high) in marks.items()}


def check_offsets_available(topic: str, marks: dict[int, tuple[int, int]], processed: dict[int, int]) -> None:
    """Raise ``OffsetsLost`` naming the lost range when a partition no longer holds the next offset to read:
    never skip silently (Spark's ``failOnDataLoss`` stays on; this names the range before it fails)."""
    lost = []
    for partition, next_offset in sorted(processed.items()):
        if partition not in marks:
            lost.append(f"partition {partition} no longer exists (topic recreated with fewer partitions?)")
            continue
        low, high = marks[partition]
        if next_offset > high:
            lost.append(
                f"partition {partition}: offsets up to {next_offset - 1} were processed but the topic "
                f"now ends at {high - 1} (topic recreated?)"
            )
        elif next_offset < low:
            lost.append(
                f"partition {partition}: offsets {next_offset}..{low - 1} ({low - next_offset} messages) "
                "are no longer stored (retention passed?)"
            )
    if lost:
        raise OffsetsLost(f"Kafka topic {topic!r} lost messages not yet ingested: " + "; ".join(lost))


NO_CLUSTER_HINT = (
    "no Kafka cluster for the topic sources: set GROUNDWORK_KAFKA_BOOTSTRAP, or run `groundwork dev` "
    "(it starts a local broker)"
)


class Kafka(BaseModel):
    """The cluster the topic sources read: bootstrap servers and client options (a JSON object).

    ``options_json`` is a string so that, when the options come from ``GROUNDWORK_KAFKA_OPTIONS``, the
    Dagster resource is given a reference to that variable rather than its value (it may hold a password).
    """

    bootstrap: str = ""
    options_json: str = "{}"
    # Messages per micro-batch: bounds the memory of one batch and the work a crash repeats.
    max_offsets_per_batch: int = 10_000
    # The topic of document events into bronze_documents ("" for none).
    documents_topic: str = ""

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(
            bootstrap=s.kafka_bootstrap,
            options_json=cls.passed_options(s),
            max_offsets_per_batch=s.kafka_max_offsets_per_batch,
            documents_topic=s.documents_topic,
        )

    @classmethod
    def passed_options(cls, s: Settings) -> str:
        return json.dumps(s.kafka_options)

    @property
    def options(self) -> dict[str, str]:
        return json.loads(self.options_json or "{}")

    def require_bootstrap(self) -> str:
        if not self.bootstrap:
            raise RuntimeError(NO_CLUSTER_HINT)
        return self.bootstrap


# `groundwork produce documents FILE`: document events are keyed by their id (assets/documents/topics.py).
DOCUMENTS_SOURCE, DOCUMENT_EVENT_KEY = "documents", ["id"]
# The sample scenario `groundwork dev` publishes to its local broker (data/samples/README.md).
SAMPLE_DOCUMENTS_TOPIC = "groundwork.samples.documents"


class BadMessageFile(ValueError):
    """A file that cannot be published as it is; the message names the file and line."""


def jsonl_messages(file: Path, key_columns: list[str]) -> list[tuple[bytes, bytes | None]]:
    """A JSON Lines file as (key, value) messages keyed by ``key_columns``; a record with ``_deleted: true``
    is a tombstone. The whole file is checked first, so a bad line publishes nothing."""
    messages: list[tuple[bytes, bytes | None]] = []
    with Path(file).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadMessageFile(f"{file}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict) or any(record.get(k) is None for k in key_columns):
                raise BadMessageFile(f"{file}:{number}: not an object with the key {key_columns}")
            if len(key_columns) == 1:
                key = str(record[key_columns[0]])
            else:
                key = json.dumps({k: record[k] for k in key_columns})
            deleted = str(record.get("_deleted", "")).lower() in ("true", "1", "yes")
            messages.append((key.encode(), None if deleted else line.strip().encode()))
    return messages


def publish(
    bootstrap: str, options: dict[str, str], topic: str, messages: list[tuple[bytes, bytes | None]]
) -> int:
    """Send ``messages`` with an idempotent producer; returns how many were not acknowledged (0: all)."""
    from confluent_kafka import Producer

    config = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 0}
    producer = Producer({**config, **client_options(options)})
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    return producer.flush(60)


def publish_sample_once(
    bootstrap: str, options: dict[str, str], file: Path, topic: str, key_columns: list[str]
) -> int:
    """Publish a sample JSON Lines file to ``topic`` once, keyed by ``key_columns``: a topic that already
    holds messages (the local broker keeps its storage between `groundwork dev` sessions) is left as it
    is. Returns the number published."""
    try:
        if any(high > low for low, high in watermarks(bootstrap, topic, options).values()):
            return 0
    except UnknownTopic:
        pass
    messages = jsonl_messages(file, key_columns)
    left = publish(bootstrap, options, topic, messages)
    if left:
        raise RuntimeError(
            f"{left} of {len(messages)} messages of {file.name} not acknowledged by {bootstrap}"
        )
    return len(messages)
