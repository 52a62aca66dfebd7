"""Jobs. The main job materializes every asset; it runs in-process, so one Spark session serves it."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

MAIN_JOB = "groundwork_main"

main_job = define_asset_job(
    MAIN_JOB,
    selection=AssetSelection.all(),
    description="Landing zone → bronze → silver → gold chunks → LanceDB embeddings, incrementally.",
)
