"""Prompt templates: files in ``models/prompts/`` are the source, MLflow's prompt registry the versions.

``sync_prompts`` registers a file as a new version only when its text differs from the latest version
and then points the ``production`` alias at it; an operator can move ``production`` back to any earlier
version (reversible without a deploy), and a sync leaves that choice alone until the file changes again.
``load_prompt`` reads whatever ``production`` points at now: one registry lookup, no process cache, so
serving follows alias moves without a restart.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from resources.tracking import MLflowStore

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
PRODUCTION = "production"
TAG_SHA = "groundwork.sha256"
TAG_FILE = "groundwork.source_file"
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class PromptInfo:
    """The outcome of syncing one template file."""

    name: str
    version: int
    changed: bool
    alias: str
    source_file: str


@dataclass(frozen=True)
class RegisteredPrompt:
    """One registered prompt version, as an alias resolved it."""

    name: str
    version: int
    alias: str
    template: str

    @property
    def variables(self) -> list[str]:
        return sorted(set(_VARIABLE.findall(self.template)))

    def format(self, **variables: object) -> str:
        """Render ``{{ var }}`` placeholders; every placeholder must be given (a missing one is an error)."""
        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise KeyError(f"prompt {self.name!r} v{self.version} needs {', '.join(missing)}")
        return _VARIABLE.sub(lambda m: str(variables[m.group(1)]), self.template)


def _client(tracking: MLflowStore):
    return tracking.client()


def _latest(client, name: str):
    """The newest registered version of ``name``, or None when the prompt was never registered."""
    if client.get_prompt(name) is None:
        return None
    versions = client.search_prompt_versions(name)
    items = list(getattr(versions, "prompt_versions", versions) or [])
    return max(items, key=lambda v: int(v.version)) if items else None


def template_files(folder: Path = PROMPTS_DIR) -> list[Path]:
    """The prompt templates: one ``<name>.txt`` per prompt."""
    return sorted(Path(folder).glob("*.txt"))


def sync_prompts(tracking: MLflowStore, folder: Path = PROMPTS_DIR) -> list[PromptInfo]:
    """Register each ``*.txt`` in ``folder`` whose text changed (a new version only on change) and
    point ``production`` at it; an unchanged file keeps its version and its current alias."""
    files = template_files(folder)
    if not files:
        raise FileNotFoundError(f"no prompt templates (*.txt) in {folder}")
    mlflow = tracking.configure()
    client = _client(tracking)
    out = []
    for file in files:
        name = file.stem
        template = file.read_text(encoding="utf-8")
        digest = hashlib.sha256(template.encode()).hexdigest()
        latest = _latest(client, name)
        if latest is not None and latest.template == template:
            has_alias = _alias_version(client, name, PRODUCTION) is not None
            if not has_alias:
                mlflow.genai.set_prompt_alias(name, alias=PRODUCTION, version=int(latest.version))
            out.append(PromptInfo(name, int(latest.version), False, PRODUCTION, str(file)))
            continue
        registered = mlflow.genai.register_prompt(
            name=name,
            template=template,
            commit_message=f"{file.name} changed (sha256 {digest[:12]})",
            tags={TAG_SHA: digest, TAG_FILE: file.name},
        )
        mlflow.genai.set_prompt_alias(name, alias=PRODUCTION, version=int(registered.version))
        out.append(PromptInfo(name, int(registered.version), True, PRODUCTION, str(file)))
    return out


def _alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_prompt_version_by_alias(name, alias)
    except MlflowException:
        return None


def load_prompt(tracking: MLflowStore, name: str, alias: str = PRODUCTION) -> RegisteredPrompt:
    """The version ``alias`` points at now (one registry lookup, about 15 ms on SQLite)."""
    found = _alias_version(_client(tracking), name, alias)
    if found is None:
        raise LookupError(
            f"no prompt {name!r} with alias {alias!r} in the MLflow registry: "
            "run `groundwork prompts sync` (or `groundwork run`) to register models/prompts/*.txt"
        )
    return RegisteredPrompt(name=name, version=int(found.version), alias=alias, template=found.template)


def set_prompt_alias(tracking: MLflowStore, name: str, version: int, alias: str = PRODUCTION) -> None:
    """Point ``alias`` at ``version`` (e.g. roll ``production`` back); the version must exist."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking)
    try:
        client.get_prompt_version(name, int(version))
    except MlflowException as exc:
        raise LookupError(f"prompt {name!r} has no version {version}") from exc
    tracking.configure().genai.set_prompt_alias(name, alias=alias, version=int(version))


def list_prompts(tracking: MLflowStore) -> list[dict]:
    """Every registered prompt with its versions (newest first) and the aliases on each."""
    client = _client(tracking)
    out = []
    for prompt in tracking.configure().genai.search_prompts():
        numbers = sorted((int(v.version) for v in client.search_prompt_versions(prompt.name)), reverse=True)
        versions = []
        for number in numbers:  # the search leaves aliases out; one lookup per version has them
            v = client.get_prompt_version(prompt.name, number)
            versions.append(
                {
                    "version": number,
                    "aliases": sorted(v.aliases or []),
                    "sha256": (v.tags or {}).get(TAG_SHA, ""),
                    "message": v.commit_message or "",
                }
            )
        out.append({"name": prompt.name, "versions": versions})
    return sorted(out, key=lambda p: p["name"])
