"""The key for tokenising PII columns: the ``pii_key`` setting (``GROUNDWORK_PII_KEY``), else a key file
made once under ``GROUNDWORK_HOME``.

The key is passed in from the settings, never read here from the environment. It is a field of the plain
class; the Dagster resource (``resources/definitions.py``) is given a reference to the variable instead,
so the Dagster UI shows the variable's name and never the key.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import BaseModel, Field

from resources.settings import Settings


class Privacy(BaseModel):
    key_file: str
    # The key itself; empty: the key file's (made on first use). Kept out of the model's repr.
    pii_key: str = Field("", repr=False)

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(key_file=str(s.home / "secrets" / "pii.key"), pii_key=cls.passed_key(s))

    @classmethod
    def passed_key(cls, s: Settings) -> str:
        """What ``pii_key`` is given: the setting's value (empty when unset)."""
        return s.pii_key.get_secret_value() if s.pii_key is not None else ""

    def key(self) -> bytes:
        if self.pii_key:
            return self.pii_key.encode()
        path = Path(self.key_file)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return path.read_text().strip().encode()
