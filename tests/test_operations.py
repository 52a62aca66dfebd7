"""Operations with real Dagster runs: retries of transient failures, bad data failing once with its cause
recorded (and shown by `groundwork status`), the instance's concurrency limits, freshness policies.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import make_settings
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    Backoff,
    DagsterEventType,
    DagsterInstance,
    Jitter,
    MaterializeResult,
    asset,
    build_run_status_sensor_context,
    materialize,
)
from deltalake import write_deltalake
from typer.testing import CliRunner

from assets.retries import is_transient
from pipelines.cli import app, ensure_dagster_home
from pipelines.definitions import build_definitions
from pipelines.failure_log import recent_failures
from pipelines.failures import failure_sensor
from pipelines.jobs import MAIN_JOB, main_job, maintenance_job
from resources import RetriesResource
from resources.settings import PROJECT_ROOT
from resources.spark import class_archive, driver_java_options


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv("GROUNDWORK_RETRY_DELAY_SECONDS", "0.2")


def _events(instance: DagsterInstance, run_id: str, event_type: DagsterEventType) -> list:
    return [r.dagster_event for r in instance.all_logs(run_id, of_type=event_type)]


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError("read timed out"), True),
        (OSError(5, "Input/output error"), True),
        (RuntimeError("Commit conflict for version 7"), True),
        (ValueError("column 'price': 'abc' is not a double"), False),
        (KeyError("content_hash"), False),
        (FileNotFoundError(2, "No such file"), False),
        (PermissionError(13, "Permission denied"), False),
    ],
)
def test_transient_errors_are_told_apart_from_bad_data(error, transient):
    assert is_transient(error) is transient


def test_retries_use_exponential_backoff_with_jitter_and_never_blanket_the_job():
    for op in maintenance_job.graph.node_defs:
        assert "retries" in op.required_resource_keys, f"{op.name} gets its retry policy from the settings"
    graph = build_definitions(make_settings(Path("/tmp/unused"))).resolve_job_def(MAIN_JOB).asset_layer
    for key in (AssetKey("silver_customers"), AssetKey("chunk_embeddings")):
        assert "retries" in graph.get(key).assets_def.required_resource_keys
    settings = make_settings(Path("/tmp/unused"), retry_delay_seconds=2.0)
    policy = RetriesResource.from_settings(settings).policy()
    assert policy.backoff == Backoff.EXPONENTIAL and policy.jitter == Jitter.PLUS_MINUS
    delays = [policy.calculate_delay(n) for n in (1, 2, 3)]
    assert 0 <= delays[0] <= 4 and 4 <= delays[1] <= 8 and 12 <= delays[2] <= 16  # (2^n - 1) * 2 s ± 2 s
    assert main_job.op_retry_policy is None  # a job-wide policy would retry bad data too


def test_transient_failure_is_retried_and_succeeds(tmp_path, fast_retries):
    from assets.retries import transient_retries

    attempts = tmp_path / "attempts"

    @asset
    @transient_retries
    def flaky_source(context: AssetExecutionContext) -> MaterializeResult:
        seen = int(attempts.read_text()) if attempts.exists() else 0
        attempts.write_text(str(seen + 1))
        if seen == 0:
            raise ConnectionResetError(104, "Connection reset by peer")
        return MaterializeResult(metadata={"retry_number": context.retry_number})

    instance = DagsterInstance.ephemeral()
    started = time.perf_counter()
    fast = RetriesResource(delay_seconds=0.2)
    result = materialize([flaky_source], instance=instance, resources={"retries": fast})
    assert result.success
    assert attempts.read_text() == "2"
    assert len(_events(instance, result.run_id, DagsterEventType.STEP_UP_FOR_RETRY)) == 1
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["retry_number"].value == 1
    assert time.perf_counter() - started < 60


def _bad_gold(settings) -> None:
    """A gold table written behind the pipeline's back, without the content_hash column."""
    rows = pa.table({"chunk_id": ["c1"], "text": ["hello"], "title": ["t"], "heading_path": [""]})
    write_deltalake(f"{settings.delta_uri}/document_chunks", rows)


DEAD_JVM_SCRIPT = """
import os, signal, sys, time
from resources.spark import get_spark
spark = get_spark(jars_dir=sys.argv[1], driver_memory="1g")
assert spark.range(3).count() == 3
jvm = spark.sparkContext._gateway.proc
os.kill(jvm.pid, signal.SIGKILL)
jvm.wait(30)
try:
    spark.range(3).count()
    raise SystemExit("a query on the killed JVM succeeded")
except Exception as exc:
    assert is_transient(exc), exc
again = get_spark(jars_dir=sys.argv[1], driver_memory="1g")
assert again.sparkContext._gateway.proc.pid != jvm.pid
print("rows after restart:", again.range(5).count())
""".replace("from resources.spark", "from assets.retries import is_transient\nfrom resources.spark")


def test_a_dead_spark_jvm_is_replaced_so_a_retry_can_run(tmp_path):
    """Killing the JVM (as the OOM killer would) fails the step with a transient error; the retry's
    ``get_spark`` starts a new JVM instead of handing back the dead session. In a subprocess: the test
    session's own JVM stays alive."""
    settings = make_settings(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", DEAD_JVM_SCRIPT, str(settings.spark_jars_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows after restart: 5" in done.stdout
    assert "Spark JVM stopped answering" in done.stderr


def test_the_driver_jvm_runs_with_the_settings_options_and_the_recorded_class_archive(spark, tmp_path):
    """The session's JVM got the settings' options and maps the classes `make setup` recorded."""
    settings = make_settings(tmp_path)
    archive = class_archive(settings.spark_jars_dir)
    assert archive.exists(), f"no class archive at {archive}: run `make setup`"
    jvm = spark.sparkContext._jvm
    arguments = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert f"-XX:SharedArchiveFile={archive}" in arguments
    assert set(settings.spark_driver_java_options.split()) <= set(arguments)
    # C1 only, with the usual code cache: C1 alone would shrink it to 48 MB, which a long-lived session filled
    # ("Out of space in CodeCache for adapters" ended a test worker's JVM).
    hotspot = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    )
    assert hotspot.getVMOption("TieredStopAtLevel").getValue() == "1"
    assert int(hotspot.getVMOption("ReservedCodeCacheSize").getValue()) >= 240 * 1024 * 1024
    # The JVM validated the archive and mapped it: Spark's own classes came from it, not from their jars
    # (the JDK's own archive alone holds about 1,300 of the classes a session loads; with it, about 10,000).
    counters = subprocess.run(
        ["jcmd", str(spark.sparkContext._gateway.proc.pid), "PerfCounter.print"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    (shared,) = [
        int(line.split("=")[1])
        for line in counters.splitlines()
        if line.startswith("java.cls.sharedLoadedClasses=")
    ]
    assert shared > 5_000, shared
    assert "-XX:SharedArchiveFile" not in driver_java_options(tmp_path / "no-jars-here", class_data=False)


def test_bad_data_fails_once_with_its_cause_recorded_and_shown(tmp_path, monkeypatch, fast_retries):
    settings = make_settings(tmp_path / "home")
    monkeypatch.setenv("GROUNDWORK_HOME", str(settings.home))
    _bad_gold(settings)
    instance = DagsterInstance.ephemeral()
    job = build_definitions(settings).resolve_job_def(MAIN_JOB)  # as the sensor and schedule run it

    result = job.execute_in_process(
        instance=instance, asset_selection=[AssetKey("chunk_embeddings")], raise_on_error=False
    )

    assert not result.success
    assert len(_events(instance, result.run_id, DagsterEventType.STEP_START)) == 1  # not retried
    assert not _events(instance, result.run_id, DagsterEventType.STEP_UP_FOR_RETRY)
    (failure,) = _events(instance, result.run_id, DagsterEventType.STEP_FAILURE)
    assert "KeyError" in failure.step_failure_data.user_failure_data.description

    # The daemon's run failure sensor records it, with the step and the cause.
    (run_failure,) = _events(instance, result.run_id, DagsterEventType.RUN_FAILURE)
    context = build_run_status_sensor_context(
        sensor_name="record_pipeline_failures",
        dagster_event=run_failure,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
    ).for_run_failure()
    failure_sensor(settings)(context)

    (row,) = recent_failures(settings)
    assert (row["run_id"], row["job_name"], row["step_key"]) == (result.run_id, MAIN_JOB, "chunk_embeddings")
    assert row["error_type"] == "KeyError" and "content_hash" in row["cause"]
    assert row["attempts"] == 1
    assert row["failed_at"] <= datetime.now(UTC)

    out = CliRunner().invoke(app, ["status", "--json"])
    assert out.exit_code == 0, out.output
    (shown,) = json.loads(out.output)["failures"]
    assert shown["run_id"] == result.run_id and "content_hash" in shown["cause"]
    out = CliRunner().invoke(app, ["status"], terminal_width=200)
    assert "recent failures" in out.output and "chunk_embeddings" in out.output


def test_instance_limits_runs_pools_and_enables_freshness(tmp_path):
    home = ensure_dagster_home(make_settings(tmp_path / "home"))
    assert (home / "dagster.yaml").read_text() == (PROJECT_ROOT / "dagster.yaml").read_text()
    with DagsterInstance.from_config(str(home)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 2
        assert {"key": "groundwork/writes-tables", "limit": 1} in queue.tag_concurrency_limits
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.get_settings("freshness").get("enabled") is True
    # The jobs that write tables carry the tag the queue limits; validation does not.
    assert main_job.tags["groundwork/writes-tables"] == "true"
    assert maintenance_job.tags["groundwork/writes-tables"] == "true"


def test_gold_and_embeddings_have_freshness_policies_that_fail_when_stale(tmp_path, monkeypatch):
    """The daemon's own evaluator: fresh after a materialization, warn after 24 h, fail after 26 h."""
    from dagster._core.definitions import freshness_evaluator
    from dagster._core.definitions.freshness import FreshnessState
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._daemon.freshness import FreshnessDaemon

    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path / "home"))
    graph = build_definitions(make_settings(tmp_path / "home")).resolve_asset_graph()
    served = [AssetKey("document_chunks"), AssetKey("chunk_embeddings")]
    for key in served:
        policy = graph.get(key).freshness_policy
        assert policy.fail_window.to_timedelta().total_seconds() == 26 * 3600
    assert graph.get(AssetKey("bronze_documents")).freshness_policy is None

    home = ensure_dagster_home(make_settings(tmp_path / "home"))
    with DagsterInstance.from_config(str(home)) as instance:
        for key in served:
            instance.report_runless_asset_event(AssetMaterialization(key))
        origin = LoadableTargetOrigin(
            module_name="pipelines.definitions", working_directory=str(PROJECT_ROOT), attribute="defs"
        )
        target = InProcessTestWorkspaceLoadTarget(InProcessCodeLocationOrigin(origin))
        with WorkspaceProcessContext(instance, target) as workspace:

            def states(hours_later: float) -> set:
                now = time.time() + hours_later * 3600
                monkeypatch.setattr(freshness_evaluator, "get_current_timestamp", lambda: now)
                asyncio.run(FreshnessDaemon()._evaluate_assets(workspace))
                records = instance.get_freshness_state_records(served)
                return {records[k].freshness_state for k in served}

            assert states(0) == {FreshnessState.PASS}
            assert states(25) == {FreshnessState.WARN}
            assert states(27) == {FreshnessState.FAIL}
