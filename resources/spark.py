"""The SparkSession with Delta Lake configured: one per process, shared by every asset."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import threading
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel
from pyspark.sql import SparkSession

from resources.kafka import kafka_spark_jars
from resources.settings import PROJECT_ROOT, Settings

DEFAULT_JARS_DIR = Path.home() / ".cache" / "groundwork" / "jars"
DELTA_JARS_HINT = "run `make setup` (it fetches Delta Lake's jars from Maven Central into the jar cache)"
_lock = threading.Lock()
_threads = threading.local()
log = logging.getLogger(__name__)


def delta_jars(jars_dir: Path) -> list[str]:
    """The Delta Lake jars Spark needs on its classpath; a clear error when they are missing."""
    jars = sorted(str(p) for p in Path(jars_dir).expanduser().glob("delta-*.jar"))
    if not any("delta-spark_" in j for j in jars):
        raise FileNotFoundError(f"No delta-spark jar in {jars_dir}: {DELTA_JARS_HINT}")
    return jars


def s3a_jars(jars_dir: Path | str) -> list[str]:
    """hadoop-aws and the AWS SDK v2 modules it needs (``make setup`` fetches them into ``<jars>/s3a``)."""
    folder = Path(jars_dir).expanduser() / "s3a"
    jars = sorted(str(p) for p in folder.glob("*.jar"))
    if not any(Path(j).name.startswith("hadoop-aws-") for j in jars):
        raise FileNotFoundError(f"No hadoop-aws jar in {folder}: run `make setup` (it fetches the s3a jars)")
    return jars


def s3a_conf(endpoint_url: str = "", region: str = "us-east-1") -> dict[str, str]:
    """Spark settings for ``s3a://`` paths. No keys: s3a's default provider chain reads the standard
    AWS variables (or an instance role), on the driver and on each executor.
    """
    conf = {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint.region": region,
    }
    if endpoint_url:
        # An S3-compatible endpoint (MinIO, moto, Ceph) serves buckets by path, often over plain HTTP.
        conf |= {
            "spark.hadoop.fs.s3a.endpoint": endpoint_url,
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint_url.startswith("https")).lower(),
        }
    return conf


def class_archive(jars_dir: Path | str) -> Path:
    """Where the driver's class data archive for this environment lives (``resources.spark_archive``
    writes it at set-up): named by a key of the Java runtime, pyspark and Delta's jars, so an upgrade of
    any of them asks for a new one instead of handing the JVM an archive it would reject."""
    import pyspark

    java = (
        Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        if os.environ.get("JAVA_HOME")
        else shutil.which("java")
    )
    java = Path(java or "java").resolve()
    parts = [metadata.version("pyspark"), pyspark.__file__, str(java)]
    for path in [java, *map(Path, delta_jars(Path(jars_dir)))]:
        stat = path.stat() if path.exists() else None
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}" if stat else path.name)
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return Path(jars_dir).expanduser() / "classes" / f"spark-driver-{key}.jsa"


def driver_java_options(jars_dir: Path | str, java_options: str = "", class_data: bool = True) -> str:
    """The driver JVM's options: the configured ones, plus the class data archive when set-up made one
    (its messages off: a JVM that cannot use it loads classes as usual, and says so on stdout)."""
    options = [java_options] if java_options else []
    archive = class_archive(jars_dir) if class_data else None
    if archive is not None and archive.exists():
        options += [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
    return " ".join(options)


def get_spark(
    master: str = "local[*]",
    jars_dir: Path | str = DEFAULT_JARS_DIR,
    driver_memory: str = "4g",
    shuffle_partitions: int = 4,
    extra_conf: dict[str, str] | None = None,
    extra_jars: list[str] | None = None,
    java_options: str = "",
    class_data: bool = True,
) -> SparkSession:
    """This thread's SparkSession over the process's one JVM; starting a JVM costs ~10 s, so it happens once
    (again only when the JVM died). ``java_options`` go to the driver's JVM, with the class data
    archive unless ``class_data`` is False."""
    with _lock:
        active = _live_session()
        if active is not None:
            return _session_of_this_thread(active)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        # Spark's Python workers must import this checkout's code, whatever the driver's cwd.
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(PROJECT_ROOT) not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *paths])
        builder = (
            SparkSession.builder.appName("groundwork")
            .master(master)
            .config("spark.jars", ",".join([*delta_jars(Path(jars_dir)), *(extra_jars or [])]))
            .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
            .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
            .config("spark.driver.memory", driver_memory)
            .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
            .config("spark.default.parallelism", str(shuffle_partitions))
            .config("spark.databricks.delta.snapshotPartitions", str(shuffle_partitions))
            # Delta's VACUUM lists files in this many tasks (Spark's default is 10,000): 27-41 s per table
            # on two cores, even an empty one, against 4-7 s.
            .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", str(shuffle_partitions))
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.pyspark.python", sys.executable)
            # On a cluster, executors start their Python workers from the worker's environment, not ours.
            .config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"])
            .config("spark.driver.bindAddress", os.environ["SPARK_LOCAL_IP"])
        )
        java = driver_java_options(jars_dir, java_options, class_data)
        if java:
            builder = builder.config("spark.driver.extraJavaOptions", java)
        for key, value in (extra_conf or {}).items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        return _session_of_this_thread(session)


def _session_of_this_thread(live: SparkSession) -> SparkSession:
    """This thread's own session over the process's one JVM and SparkContext.

    Session state is per session: Delta's transaction id for a MERGE (``idempotent_dml``), temporary views,
    runtime settings. Steps that run side by side in threads (``pipelines/executor.py``) must not see each
    other's, so each thread gets a session of its own (``newSession``: it shares the context, the cache and
    the catalog, and costs milliseconds), made the JVM thread's active one for Delta's commands.
    """
    own = getattr(_threads, "session", None)
    if own is None or own.sparkContext is not live.sparkContext:
        own = live.newSession()
        _threads.session = own
    SparkSession._get_j_spark_session_class(own._jvm).setActiveSession(own._jsparkSession)
    return own


def _live_session() -> SparkSession | None:
    """This process's session, or None. A JVM that died (killed, out of memory) leaves its Python objects
    behind and every call on them fails; they are dropped so that the next builder starts a new JVM, and a
    retried step runs again instead of failing on the dead gateway."""
    from pyspark import SparkContext

    try:
        active = SparkSession.getActiveSession()
        if active is None or not active.sparkContext._jsc.sc().isStopped():
            return active
    except Exception as exc:  # py4j: the gateway no longer answers
        log.warning("this process's Spark JVM stopped answering, starting a new one: %s", exc)
    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None
    SparkContext._active_spark_context = None
    SparkContext._gateway = None
    SparkContext._jvm = None
    return None


class Spark(BaseModel):
    """Spark with Delta Lake. ``master`` is ``local[*]`` embedded, or a cluster URL to scale out."""

    master: str = "local[*]"
    jars_dir: str = str(DEFAULT_JARS_DIR)
    driver_memory: str = "4g"
    shuffle_partitions: int = 4
    extra_conf: dict[str, str] = {}
    extra_jars: list[str] = []
    java_options: str = ""

    @classmethod
    def from_settings(cls, s: Settings):
        conf, jars = {}, []
        if s.uses_object_storage:
            conf, jars = s3a_conf(s.s3_endpoint_url, s.s3_region), s3a_jars(s.spark_jars_dir)
        # Spark's Kafka source (topic sources), when `make setup` has fetched it: 4 jars, loaded lazily.
        kafka = Path(s.spark_jars_dir).expanduser() / "kafka-spark"
        if any(kafka.glob("spark-sql-kafka-*.jar")):
            jars = [*jars, *kafka_spark_jars(s.spark_jars_dir)]
        return cls(
            master=s.spark_master,
            jars_dir=str(s.spark_jars_dir),
            driver_memory=s.spark_driver_memory,
            shuffle_partitions=s.spark_shuffle_partitions,
            extra_conf=conf,
            extra_jars=jars,
            java_options=s.spark_driver_java_options,
        )

    def session(self) -> SparkSession:
        return get_spark(
            self.master,
            self.jars_dir,
            self.driver_memory,
            self.shuffle_partitions,
            self.extra_conf,
            self.extra_jars,
            self.java_options,
        )
