"""A semantic cache: a query close enough (cosine) to an earlier one with the same scope gets its answer.

The scope is everything that changes what a caller may see or asks for: the caller's effective access
groups, the operation, mode, k, filters, and the index (active table and its version). Entries of one
scope are never compared with another's, so an answer can never cross group sets; a new table version
or a switch of the active table empties the cache.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CacheScope:
    operation: str
    groups: frozenset[str]
    mode: str
    k: int
    filters: str  # canonical JSON
    index: tuple[str, int]  # (active table, version)

    @classmethod
    def of(
        cls,
        operation: str,
        groups: frozenset[str],
        mode: str,
        k: int,
        filters: dict | None,
        index: tuple[str, int],
        extra: Any = None,
    ) -> CacheScope:
        canonical = json.dumps({"filters": filters or {}, "extra": extra}, sort_keys=True, default=str)
        return cls(operation, frozenset(groups), mode, k, canonical, index)


class SemanticCache:
    """Thread-safe; at most ``max_entries_per_scope`` recent queries per scope, ``max_scopes`` scopes."""

    def __init__(
        self, threshold: float, max_entries_per_scope: int = 256, max_scopes: int = 1024, enabled: bool = True
    ):
        self.threshold = threshold
        self.enabled = enabled
        self.max_entries = max_entries_per_scope
        self.max_scopes = max_scopes
        self._lock = threading.Lock()
        self._index: tuple[str, int] | None = None
        self._scopes: OrderedDict[CacheScope, tuple[list[np.ndarray], list[Any]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _follow(self, index: tuple[str, int]) -> None:
        if index != self._index:  # a new table version or another active table: nothing cached holds
            self._scopes.clear()
            self._index = index

    def get(self, scope: CacheScope, vector: np.ndarray) -> Any | None:
        if not self.enabled:
            return None
        with self._lock:
            self._follow(scope.index)
            entry = self._scopes.get(scope)
            if entry is not None and entry[0]:
                sims = np.stack(entry[0]) @ vector
                best = int(np.argmax(sims))
                if float(sims[best]) >= self.threshold:
                    self._scopes.move_to_end(scope)
                    self.hits += 1
                    return entry[1][best]
            self.misses += 1
            return None

    def put(self, scope: CacheScope, vector: np.ndarray, value: Any) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._index is None:
                self._index = scope.index
            if scope.index != self._index:  # computed on a version the cache has moved past
                return
            vectors, values = self._scopes.setdefault(scope, ([], []))
            self._scopes.move_to_end(scope)
            vectors.append(np.asarray(vector, dtype=np.float32))
            values.append(value)
            if len(vectors) > self.max_entries:
                del vectors[0], values[0]
            while len(self._scopes) > self.max_scopes:
                self._scopes.popitem(last=False)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
