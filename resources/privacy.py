"""The key for tokenising PII columns: from ``GROUNDWORK_PII_KEY``, else a key file made once.

Only the file's path is resource configuration; the key itself never appears in config, the UI or logs.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import BaseModel

from resources.settings import Settings

PII_KEY_ENV = "GROUNDWORK_PII_KEY"


class Privacy(BaseModel):
    key_file: str

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(key_file=str(s.home / "secrets" / "pii.key"))

    def key(self) -> bytes:
        from_env = os.environ.get(PII_KEY_ENV, "")
        if from_env:
            return from_env.encode()
        path = Path(self.key_file)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return path.read_text().strip().encode()
