"""``prompt_templates``: ``models/prompts/*.txt`` in MLflow's prompt registry, a new version per change."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from models.prompt_registry import PROMPTS_DIR, sync_prompts
from resources import MLflowResource


@asset(group_name="models", kinds={"mlflow"})
def prompt_templates(context: AssetExecutionContext, mlflow: MLflowResource) -> MaterializeResult:
    """Registers each template whose text changed and points ``production`` at it; unchanged files
    keep their version and alias (so a rollback of ``production`` by an operator stands)."""
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
        }
    )
