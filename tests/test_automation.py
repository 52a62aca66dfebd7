"""Near-real-time wiring with Dagster's own evaluators: a landing sensor per zone, and declarative
automation that carries updates downstream but holds back behind a failed blocking check."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    RunRequest,
    SkipReason,
    build_sensor_context,
    evaluate_automation_conditions,
)

from assets.structured.assets import current_ingest_day
from pipelines.definitions import build_definitions
from resources import Settings

DOWNSTREAM_OF_DOCUMENTS = {"silver_documents", "document_chunks", "chunk_embeddings"}


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path / "home"))
    return Settings()


def _sensor(defs, name: str):
    return next(s for s in defs.sensors if s.name == name)


def test_a_sensor_per_landing_zone_runs_once_per_batch(settings):
    defs = build_definitions(settings)
    names = {s.name for s in defs.sensors}
    assert {"documents_landing_sensor", "customers_landing_sensor", "groundwork_automation"} <= names
    sensor = _sensor(defs, "customers_landing_sensor")
    with DagsterInstance.ephemeral() as instance:
        idle = sensor(build_sensor_context(instance=instance, cursor=None, definitions=defs))
        assert isinstance(idle, SkipReason), "nothing has landed"
        cursor = None
        folder = Path(settings.landing_uri) / "customers"
        folder.mkdir(parents=True)
        (folder / "a.csv").write_text("customer_id,name,updated_at\nC1,A,2024-01-01T00:00:00\n")
        context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
        request = sensor(context)
        assert isinstance(request, RunRequest)
        assert request.asset_selection == [AssetKey("bronze_customers")]
        assert request.partition_key == current_ingest_day()
        assert request.run_key.startswith("customers-")
        again = sensor(build_sensor_context(instance=instance, cursor=context.cursor, definitions=defs))
        assert isinstance(again, SkipReason), "the same files start no second run"
        (folder / "b.csv").write_text("customer_id,name,updated_at\nC2,B,2024-01-01T00:00:00\n")
        later = sensor(build_sensor_context(instance=instance, cursor=context.cursor, definitions=defs))
        assert isinstance(later, RunRequest) and later.run_key != request.run_key


def _requested(defs, instance, cursor=None):
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    names = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    return {n for n in names if result.get_num_requested(AssetKey(n))}, result.cursor


def test_downstream_follows_bronze_and_waits_for_a_failed_blocking_check(settings):
    defs = build_definitions(settings)
    with DagsterInstance.ephemeral() as instance:
        _, cursor = _requested(defs, instance)
        instance.report_runless_asset_event(AssetMaterialization("bronze_documents"))
        check = AssetCheckKey(AssetKey("bronze_documents"), "bronze_documents_expectations")
        instance.report_runless_asset_event(
            AssetCheckEvaluation(asset_key=check.asset_key, check_name=check.name, passed=True)
        )
        requested, cursor = _requested(defs, instance, cursor)
        assert requested >= DOWNSTREAM_OF_DOCUMENTS, "the whole chain is requested in one evaluation"
        assert not any(name.startswith("bronze_") for name in requested), "bronze is the sensors' job"

    with DagsterInstance.ephemeral() as instance:
        _, cursor = _requested(defs, instance)
        instance.report_runless_asset_event(AssetMaterialization("bronze_documents"))
        instance.report_runless_asset_event(
            AssetCheckEvaluation(asset_key=check.asset_key, check_name=check.name, passed=False)
        )
        requested, _ = _requested(defs, instance, cursor)
        assert not requested & DOWNSTREAM_OF_DOCUMENTS, "held back while the blocking check fails"


def test_the_nightly_refresh_runs_the_ingest_day_of_its_tick(settings):
    from datetime import UTC, datetime

    from dagster import build_schedule_context

    defs = build_definitions(settings)
    schedule = defs.get_schedule_def("nightly_refresh")
    tick = build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 27, 2, 0, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    [request] = schedule.evaluate_tick(tick).run_requests
    assert (request.partition_key, request.run_key) == ("2026-11-27", "nightly-2026-11-27")
