"""The Dagster code location: every asset, job, schedule and sensor, with resources from the settings.

The settings are read here, once, for the module-level ``defs``; everything below takes them as an argument.
"""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules

from assets.chunks import assets as chunk_assets
from assets.documents import assets as document_assets
from assets.embeddings import assets as embedding_assets
from assets.embeddings.adaptation import adapted_embedder
from assets.evaluation import assets as evaluation_assets
from assets.prompts import assets as prompt_assets
from assets.structured.assets import structured_assets
from monitoring.checks import monitoring_checks, serving_audit
from pipelines.executor import threaded_executor
from pipelines.failures import failure_sensor
from pipelines.jobs import adapt_job, main_job, maintenance_job, monitoring_job, validation_job
from pipelines.schedules import daily_monitoring, nightly_maintenance, nightly_refresh, nightly_validation
from pipelines.sensors import automation_sensor, landing_sensors
from pipelines.worker import documents_batch_job, documents_worker_job, topics_batch_job
from quality.checks import quality_checks
from resources import Settings, build_resources, get_settings


def all_assets(settings: Settings) -> list:
    return [
        *load_assets_from_modules(
            [document_assets, chunk_assets, embedding_assets, evaluation_assets, prompt_assets]
        ),
        *structured_assets(settings.sources_file),
    ]


def build_definitions(settings: Settings) -> Definitions:
    """Definitions for one settings object; the module-level ``defs`` uses the environment's."""
    assets, checks = all_assets(settings), quality_checks(settings.sources_file)
    monitors = monitoring_checks(settings)
    worker_job = documents_worker_job(settings, [*assets, *checks])
    jobs = [validation_job(checks), monitoring_job(monitors)]
    topics_job = topics_batch_job(settings)
    jobs += [topics_job] if topics_job else []
    return Definitions(
        assets=[*assets, adapted_embedder, serving_audit],
        asset_checks=[*checks, *monitors],
        jobs=[main_job, adapt_job, maintenance_job, worker_job, documents_batch_job, *jobs],
        schedules=[nightly_refresh, nightly_validation, nightly_maintenance, daily_monitoring],
        sensors=[
            *landing_sensors(settings),
            automation_sensor,
            failure_sensor(settings),
        ],
        resources=build_resources(settings),
        # One process per run: Spark's JVM and the embedding model load once, not once per step; steps that
        # do not depend on each other run side by side in its threads.
        executor=threaded_executor.configured({"max_concurrent": settings.pipeline_concurrent_steps}),
    )


defs = build_definitions(get_settings())
