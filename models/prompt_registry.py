"""Prompt templates in MLflow's prompt registry: register the files of ``models/prompts/`` and load a
template by alias (``production`` by default), so serving always renders the promoted version.

Minimal version written for the serving branch; the MLflow issue's branch owns this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from resources.tracking import MLflowResource

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
PRODUCTION = "production"
_VARIABLE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class RegisteredPrompt:
    """One version of a registered template, as loaded through an alias."""

    name: str
    version: int
    alias: str
    template: str

    @property
    def variables(self) -> set[str]:
        return set(_VARIABLE.findall(self.template))

    def format(self, **variables: object) -> str:
        """The template with every ``{{ var }}`` filled; a missing variable is an error, not a blank."""
        missing = self.variables - variables.keys()
        if missing:
            raise ValueError(f"prompt {self.name!r} v{self.version} needs {', '.join(sorted(missing))}")
        return _VARIABLE.sub(lambda m: str(variables[m.group(1)]), self.template)


def load_prompt(tracking: MLflowResource, name: str, alias: str = PRODUCTION) -> RegisteredPrompt:
    """The version of prompt ``name`` that ``alias`` points at (LookupError when there is none)."""
    mlflow = tracking.configure()
    try:
        prompt = mlflow.genai.load_prompt(f"prompts:/{name}@{alias}")
    except Exception as exc:
        raise LookupError(f"no prompt {name!r} with alias {alias!r}: run sync_prompts first ({exc})") from exc
    return RegisteredPrompt(name=name, version=int(prompt.version), alias=alias, template=prompt.template)


def sync_prompts(tracking: MLflowResource, folder: Path = PROMPTS_DIR) -> dict[str, int]:
    """Register each ``<name>.txt`` whose text differs from its ``production`` version as a new version
    and point ``production`` at it; returns each prompt's production version."""
    mlflow = tracking.configure()
    versions = {}
    for path in sorted(Path(folder).glob("*.txt")):
        template = path.read_text(encoding="utf-8")
        try:
            current = load_prompt(tracking, path.stem)
        except LookupError:
            current = None
        if current is not None and current.template == template:
            versions[path.stem] = current.version
            continue
        registered = mlflow.genai.register_prompt(
            name=path.stem, template=template, commit_message=f"from {path.name}"
        )
        mlflow.genai.set_prompt_alias(path.stem, alias=PRODUCTION, version=registered.version)
        versions[path.stem] = int(registered.version)
    return versions
