"""API keys: random secrets shown once, stored only as their SHA-256, each mapped to access groups.

Keys are 32 random bytes, so a plain SHA-256 (not a slow password hash) is enough: there is nothing
to guess. The store is one SQLite file under GROUNDWORK_HOME; the server re-reads it when it changes,
so a key created with `groundwork keys create` works without a restart.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

KEY_PREFIX = "gw_"
GROUP_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class Caller:
    """Who is asking: the key's name (never the key) and the groups it may read."""

    name: str
    groups: frozenset[str]


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Hashed API keys in SQLite; lookups come from an in-memory copy refreshed when the file changes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, Caller] = {}

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path)
        db.execute(
            "CREATE TABLE IF NOT EXISTS api_keys (name TEXT PRIMARY KEY, key_sha256 TEXT UNIQUE NOT NULL, "
            "groups TEXT NOT NULL, created_at TEXT NOT NULL)"
        )
        return db

    def create(self, name: str, groups: list[str]) -> str:
        """A new key for ``name`` reading ``groups``; the key is returned once and never stored."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name or ""):
            raise ValueError("key name: 1-64 letters, digits, '.', '_' or '-'")
        groups = sorted({g.strip() for g in groups if g.strip()})
        if not groups:
            raise ValueError("a key needs at least one access group")
        bad = [g for g in groups if not GROUP_NAME.match(g)]
        if bad:
            raise ValueError(f"invalid group name(s): {', '.join(bad)} (letters, digits, '_.:-', max 64)")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._connect() as db:
            try:
                db.execute(
                    "INSERT INTO api_keys VALUES (?, ?, ?, ?)",
                    (name, key_hash(key), ",".join(groups), datetime.now(UTC).isoformat()),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"a key named {name!r} exists already") from None
        return key

    def list(self) -> list[dict]:
        """Names, groups and creation times (no key material)."""
        with self._connect() as db:
            rows = db.execute("SELECT name, groups, created_at FROM api_keys ORDER BY name").fetchall()
        return [{"name": n, "groups": g.split(","), "created_at": c} for n, g, c in rows]

    def authenticate(self, key: str | None) -> Caller | None:
        """The caller a presented key belongs to, or None."""
        if not key:
            return None
        self._reload()
        return self._by_hash.get(key_hash(key))

    def _reload(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._by_hash = {}
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        with self._lock:
            with self._connect() as db:
                rows = db.execute("SELECT name, key_sha256, groups FROM api_keys").fetchall()
            self._by_hash = {h: Caller(n, frozenset(g.split(","))) for n, h, g in rows}
            self._stamp = stamp
