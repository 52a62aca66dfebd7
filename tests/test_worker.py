"""The resident documents worker: the landing sensor keeps one running, and the worker carries each change
of the landing zone to the index in its own in-process run (real Spark, Delta, LanceDB and Dagster)."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path

import lancedb
import pytest
from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunRequest,
    SkipReason,
    build_sensor_context,
)

from pipelines.definitions import build_definitions
from pipelines.worker import BATCH_JOB, DOCUMENT_ASSETS, WORKER_JOB, WORKER_TAG
from resources import Settings
from resources.lancedb.tables import open_active
from resources.settings import SAMPLES_DIR, get_settings


@pytest.fixture
def worker_home(small_home, spark, monkeypatch) -> Settings:
    """``small_home`` as the worker's environment: the worker reads its settings from it."""
    monkeypatch.setenv("GROUNDWORK_HOME", str(small_home.home))
    monkeypatch.setenv("GROUNDWORK_SPARK_MASTER", small_home.spark_master)
    monkeypatch.setenv("GROUNDWORK_SPARK_SHUFFLE_PARTITIONS", str(small_home.spark_shuffle_partitions))
    return small_home


def _documents_sensor(defs):
    return next(s for s in defs.sensors if s.name == "documents_landing_sensor")


def _indexed_paths(settings: Settings) -> set[str]:
    table = open_active(lancedb.connect(settings.lancedb_uri), settings.embeddings_table)
    if table is None:
        return set()
    return set(table.search().select(["path"]).limit(None).to_arrow()["path"].to_pylist())


def test_the_sensor_starts_one_worker_and_leaves_landed_files_to_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path / "home"))
    settings = Settings()
    assert settings.documents_worker, "the worker is the default"
    defs = build_definitions(settings)
    sensor = _documents_sensor(defs)
    folder = Path(settings.documents_landing)
    folder.mkdir(parents=True)
    with DagsterInstance.ephemeral() as instance:
        assert isinstance(sensor(build_sensor_context(instance=instance, definitions=defs)), SkipReason)
        (folder / "a.md").write_text("# A\n\nFirst note.\n")
        context = build_sensor_context(instance=instance, definitions=defs)
        request = sensor(context)
        assert isinstance(request, RunRequest) and request.job_name == WORKER_JOB
        assert request.run_key.startswith("documents-worker-")

        worker = DagsterRun(job_name=WORKER_JOB, run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED)
        instance.add_run(worker)
        (folder / "b.md").write_text("# B\n\nSecond note.\n")
        busy = sensor(build_sensor_context(instance=instance, cursor=context.cursor, definitions=defs))
        assert isinstance(busy, SkipReason) and worker.run_id in busy.skip_message, "no second worker"

        instance.report_run_failed(worker)  # it crashed: the next check starts a new one, which catches up
        restart = sensor(build_sensor_context(instance=instance, cursor=context.cursor, definitions=defs))
        assert isinstance(restart, RunRequest) and restart.job_name == WORKER_JOB
        assert restart.run_key != request.run_key


def test_without_the_worker_each_batch_is_one_run_to_the_index(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GROUNDWORK_DOCUMENTS_WORKER", "false")
    settings = Settings()
    defs = build_definitions(settings)
    folder = Path(settings.documents_landing)
    folder.mkdir(parents=True)
    (folder / "note.md").write_text("# Note\n\nThe stove needs descaling every month.\n")
    with DagsterInstance.ephemeral() as instance:
        request = _documents_sensor(defs)(build_sensor_context(instance=instance, definitions=defs))
    assert isinstance(request, RunRequest) and request.partition_key is None and request.job_name is None
    assert {key.to_user_string() for key in request.asset_selection} == set(DOCUMENT_ASSETS)


def test_the_worker_indexes_each_change_in_its_own_run_with_the_blocking_checks(
    worker_home, spark, monkeypatch
):
    monkeypatch.setenv("GROUNDWORK_DOCUMENTS_WORKER_POLL_SECONDS", "0.5")
    settings = get_settings()
    landing = Path(settings.documents_landing)
    first = {p.relative_to(landing).as_posix() for p in landing.rglob("*.md")}
    late = "faq/late-arrival.txt"

    def land_while_running() -> None:  # a file that lands after the worker has indexed the first batch
        deadline = time.monotonic() + 600
        while not first <= _indexed_paths(settings) and time.monotonic() < deadline:
            time.sleep(0.5)
        staged = landing / "faq" / "_late-arrival.txt"
        shutil.copyfile(SAMPLES_DIR / "documents" / "faq" / "bike-repair-faq.txt", staged)
        staged.rename(landing / late)

    dropper = threading.Thread(target=land_while_running, daemon=True)
    dropper.start()
    with DagsterInstance.ephemeral() as instance:
        worker = build_definitions(settings).get_job_def(WORKER_JOB)
        result = worker.execute_in_process(
            instance=instance,
            run_config={"ops": {"index_landed_documents": {"config": {"idle_exit_seconds": 8}}}},
        )
        dropper.join(timeout=5)
        assert result.success
        assert result.output_for_node("index_landed_documents") == 2, "one batch per change"
        batches = [
            r for r in instance.get_run_records() if r.dagster_run.tags.get(WORKER_TAG) == result.run_id
        ]
        assert len(batches) == 2 and all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in batches)
        assert {r.dagster_run.job_name for r in batches} == {BATCH_JOB}, "listed in the UI as the batch job"
        for record in batches:
            run_id = record.dagster_run.run_id
            materialized = {
                e.dagster_event.asset_key.to_user_string()
                for e in instance.all_logs(run_id)
                if e.dagster_event and e.dagster_event.is_step_materialization
            }
            assert materialized == set(DOCUMENT_ASSETS)
            checked = [
                e.dagster_event.event_specific_data
                for e in instance.all_logs(run_id)
                if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
            ]
            assert {c.asset_key.to_user_string() for c in checked} == set(DOCUMENT_ASSETS)
            assert all(c.passed for c in checked)
    assert _indexed_paths(settings) == first | {late}
    bronze = spark.read.format("delta").load(f"{settings.delta_uri}/bronze_documents")
    assert bronze.where(f"path = '{late}'").count() == 1, "the late file is ingested exactly once"


def test_a_failed_batch_is_recorded_with_its_cause_and_not_retried_in_a_loop(worker_home, spark, monkeypatch):
    from pipelines.failure_log import recent_failures

    blocker = worker_home.home / "not-a-folder"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the LanceDB folder should be")
    monkeypatch.setenv("GROUNDWORK_LANCEDB_URI", str(blocker / "lancedb"))
    settings = get_settings()
    with DagsterInstance.ephemeral() as instance:
        worker = build_definitions(settings).get_job_def(WORKER_JOB)
        result = worker.execute_in_process(
            instance=instance,
            run_config={"ops": {"index_landed_documents": {"config": {"idle_exit_seconds": 3}}}},
        )
        assert result.success, "the worker outlives a failed batch"
        assert result.output_for_node("index_landed_documents") == 1, (
            "the same files are not retried in a loop"
        )
        [batch] = [
            r for r in instance.get_run_records() if r.dagster_run.tags.get(WORKER_TAG) == result.run_id
        ]
        assert batch.dagster_run.status == DagsterRunStatus.FAILURE
    [failure] = recent_failures(settings)
    assert (failure["run_id"], failure["job_name"]) == (batch.dagster_run.run_id, WORKER_JOB)
    assert failure["step_key"] == "chunk_embeddings" and failure["cause"]


def test_the_worker_stops_when_the_dagster_daemon_has_stopped(worker_home, spark, monkeypatch):
    """`dagster dev` stopped: its code server keeps a launched run alive, so the worker must notice."""
    from dagster._daemon.types import DaemonHeartbeat

    from pipelines import worker as worker_module

    monkeypatch.setattr(worker_module, "DAEMON_CHECK_SECONDS", 0.0)
    settings = get_settings()
    with DagsterInstance.ephemeral() as instance:
        assert not worker_module.daemon_stopped(instance), "no daemon at all: a run executed in-process"
        now = time.time()
        beat = DaemonHeartbeat(now, "SENSOR", "daemon-1", errors=[])
        instance.add_daemon_heartbeat(beat)
        assert not worker_module.daemon_stopped(instance, now=now + 30)
        assert worker_module.daemon_stopped(instance, now=now + worker_module.DAEMON_GONE_SECONDS + 1)

        stale = now - worker_module.DAEMON_GONE_SECONDS - 60
        instance.add_daemon_heartbeat(DaemonHeartbeat(stale, "SENSOR", "daemon-1", errors=[]))
        job = build_definitions(settings).get_job_def(WORKER_JOB)
        result = job.execute_in_process(  # the idle exit only keeps a broken check from hanging the suite
            instance=instance,
            run_config={"ops": {"index_landed_documents": {"config": {"idle_exit_seconds": 120}}}},
        )
        assert result.success and result.output_for_node("index_landed_documents") == 1
        messages = [e.message for e in instance.all_logs(result.run_id) if e.message]
        assert any("daemon has stopped" in m for m in messages)
