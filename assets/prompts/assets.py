"""``prompt_templates``: ``models/prompts/*.txt`` in MLflow's prompt registry, a new version per change."""

import hashlib

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from models.prompt_registry import PROMPTS_DIR, sync_prompts, template_files
from resources import MLflowResource


@asset(group_name="models", kinds={"mlflow"})
def prompt_templates(context: AssetExecutionContext, mlflow: MLflowResource) -> MaterializeResult:
    """Registers each template whose text changed and points ``production`` at it; unchanged files
    keep their version and alias (so a rollback of ``production`` by an operator stands)."""
    templates = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in template_files()}
    state = {"tracking_uri": mlflow.tracking_uri, "templates": templates}
    event = context.instance.get_latest_materialization_event(context.asset_key)
    if event is not None and event.asset_materialization is not None:
        previous = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        if previous.get("synced") == state:
            # The same files were synced into the same registry: nothing to register, no MLflow client.
            return MaterializeResult(metadata={**previous, "prompts_changed": 0})
    synced = sync_prompts(mlflow)
    for info in synced:
        if info.changed:
            context.log.info("prompt %s: registered version %d as %s", info.name, info.version, info.alias)
    return MaterializeResult(
        metadata={
            "dagster/row_count": len(synced),
            "prompts_changed": sum(info.changed for info in synced),
            "versions": MetadataValue.json({info.name: info.version for info in synced}),
            "folder": MetadataValue.path(str(PROMPTS_DIR)),
            "synced": MetadataValue.json(state),
        }
    )
