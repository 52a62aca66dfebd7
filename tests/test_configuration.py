"""The configuration reference: docs/configuration.md is what the settings object says, row for row."""

from __future__ import annotations

import re
import subprocess

from pydantic import SecretStr

from resources.settings import PROJECT_ROOT, Settings, env_var, settings_reference

REFERENCE = PROJECT_ROOT / "docs" / "configuration.md"
REGENERATE = "python -m resources.settings > docs/configuration.md"


def test_every_setting_has_a_meaning():
    missing = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert not missing, f"settings without a description (Field(..., description=...)): {missing}"


def test_reference_is_generated_from_the_settings():
    """A new setting without a row, a changed default or meaning: the committed page is stale."""
    assert REFERENCE.read_text() == settings_reference(), (
        f"docs/configuration.md is stale: run `{REGENERATE}`"
    )
    rows = [line for line in REFERENCE.read_text().splitlines() if line.startswith("| `")]
    assert [row.split("`")[3] for row in rows] == [env_var(name) for name in Settings.model_fields]


def test_reference_shows_defaults_as_written():
    page = settings_reference()
    assert "| `GROUNDWORK_HOME` | `<checkout>/.groundwork` |" in page
    assert "| `GROUNDWORK_LANDING_URI` | `$GROUNDWORK_HOME/landing` |" in page
    assert "| `GROUNDWORK_AUDIT_URI` | `$GROUNDWORK_DELTA_URI/serving_audit` |" in page
    assert "| `GROUNDWORK_MLFLOW_REGISTRY_URI` | `$GROUNDWORK_MLFLOW_TRACKING_URI` |" in page
    assert "| `GROUNDWORK_SPARK_JARS_DIR` | `~/.cache/groundwork/jars` |" in page
    assert "| `GROUNDWORK_DOCUMENTS_WORKER` | `true` |" in page
    assert "| `GROUNDWORK_PII_KEY` | *unset* |" in page


def test_reference_reads_no_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path))
    monkeypatch.setenv("GROUNDWORK_SERVE_PORT", "9999")
    assert settings_reference() == REFERENCE.read_text()


def test_every_variable_mentioned_is_a_setting():
    """Code and docs name only variables the settings object reads (a renamed setting leaves none behind)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    known = {env_var(name) for name in Settings.model_fields}
    unknown = set()
    for name in listed:
        path = PROJECT_ROOT / name
        if name.startswith(("tests/", "data/")) or path.suffix not in {".py", ".md", ".yaml", ".toml", ""}:
            continue
        if path.is_file():
            found = re.findall(r"GROUNDWORK_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="ignore"))
            unknown |= {(name, variable) for variable in found if variable not in known}
    assert not unknown, sorted(unknown)


def test_pii_key_is_a_setting_passed_in_never_shown(tmp_path, monkeypatch):
    from resources.definitions import PrivacyResource
    from resources.privacy import Privacy

    settings = Settings(home=tmp_path, pii_key=SecretStr("k-123"))
    plain = Privacy.from_settings(settings)
    assert plain.key() == b"k-123" and "k-123" not in repr(plain)
    # The Dagster resource holds a reference to the variable (the UI shows its name), not the key.
    monkeypatch.setenv(env_var("pii_key"), "k-123")
    resource = PrivacyResource.from_settings(Settings(home=tmp_path))
    assert resource.pii_key == "GROUNDWORK_PII_KEY" and type(resource.pii_key).__name__ == "EnvVar"
    # Unset (or empty): a key file made once, mode 0600.
    monkeypatch.setenv(env_var("pii_key"), "")
    assert PrivacyResource.from_settings(Settings(home=tmp_path)).pii_key == ""
    made = Privacy.from_settings(Settings(home=tmp_path)).key()
    assert made == (tmp_path / "secrets" / "pii.key").read_text().strip().encode()
    assert (tmp_path / "secrets" / "pii.key").stat().st_mode & 0o777 == 0o600
