"""Search the chunk index: vector, full-text or hybrid, refusing an index built with another model.

The searcher follows the active-table pointer (a model promoted or rolled back, rows added by the
pipeline) without a restart, embeds each query with the model the active table was built with, and,
when given the caller's access groups, filters every mode on the server (a LanceDB prefilter, or for a
vector query whose caller may see a large share of the rows, a check of the nearest candidates' row ids
against the rows the access clause admits), so a chunk outside those groups can never be among the
results, whatever ``k`` or the metadata filters are.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from resources.embedder import Embedder
from resources.lancedb.query import RERANK_POOL, VECTOR_SEARCH_REFINE, nearest_arrow, rerank_exact
from resources.lancedb.tables import (
    CITATION_COLUMN,
    CITATION_FIELDS,
    POINTER_SUFFIX,
    active_table_name,
    open_table,
    table_model,
)
from serving.injection import injection_match

if TYPE_CHECKING:
    import lance
    import lancedb
    import pyarrow as pa

log = logging.getLogger(__name__)
SearchMode = Literal["vector", "fulltext", "hybrid"]
SEARCH_MODES: tuple[str, ...] = ("vector", "fulltext", "hybrid")
# What a hit is read from: the ``citation`` column, or on a table from before it each field's own column.
CITED_COLUMNS = [CITATION_COLUMN, "text", "access_groups"]
RESULT_COLUMNS = [*CITATION_FIELDS, "text", "access_groups"]
# Metadata a caller may filter on: field -> (column, how it matches). Anything else is refused.
FILTERABLE_FIELDS: dict[str, tuple[str, str]] = {
    "path_prefix": ("path", "prefix"),
    "media_type": ("media_type", "in"),
    "title": ("title", "in"),
    "document_id": ("document_id", "in"),
    "page": ("page", "in_int"),
    "groups": ("access_groups", "groups"),
}
# Hybrid search: chunks fetched from each mode before fusion (at least k), and the RRF constant.
HYBRID_CANDIDATES = 50
RRF_K = 60
# Access filtering of a vector query. When the caller's groups hold a large share of the rows, the
# nearest ``n / share * POSTFILTER_OVERFETCH`` rows (at most POSTFILTER_MAX_CANDIDATES) are fetched and
# filtered, which at 1M rows is 2-3x faster than a prefilter (building the allowed-row mask costs more
# than the search); too few survivors, a small share or metadata filters use the prefilter. Either way
# the filter runs on the server and no other chunk can be returned.
POSTFILTER_OVERFETCH = 2.0
POSTFILTER_MAX_CANDIDATES = 100
# Row masks of the access clauses of recent callers (one byte a row: 1 MB each at 1M rows).
VISIBLE_ROWS_CACHE_SIZE = 32


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk with everything a caller needs to cite it."""

    chunk_id: str
    document_id: str
    chunk_index: int
    path: str
    title: str
    heading_path: str
    page: int | None
    text: str
    score: float
    delta_version: int
    table_version: int
    table_name: str = ""
    access_groups: tuple[str, ...] = ()
    injection_suspected: bool = False
    injection_pattern: str | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["access_groups"] = list(self.access_groups)
        return out


class ModelMismatchError(ValueError):
    """The query would be embedded with a different model than the index was built with."""


class FilterError(ValueError):
    """A metadata filter names an unknown field or has a value of the wrong shape."""


class GroupNotAllowedError(PermissionError):
    """A filter names an access group the caller does not hold."""


@dataclass(frozen=True)
class IndexState:
    """Which physical table serving reads now, at which version, built with which model."""

    table_name: str
    version: int
    model_id: str
    dimension: int
    columns: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class VisibleRows:
    """The rows of one table version that an access clause admits, as a mask over each fragment's row
    offsets, so a search candidate is checked by its row id without reading its groups."""

    share: float
    masks: dict[int, np.ndarray]

    @classmethod
    def of(cls, dataset: lance.LanceDataset, where: str) -> VisibleRows:
        total = dataset.count_rows()
        row_ids = dataset.to_table(columns=[], with_row_id=True, filter=where)["_rowid"].to_numpy()
        fragments, offsets = row_ids >> 32, row_ids & 0xFFFFFFFF
        masks = {}
        for fragment in np.unique(fragments).tolist():
            admitted = offsets[fragments == fragment]
            mask = np.zeros(int(admitted.max()) + 1, dtype=bool)
            mask[admitted] = True
            masks[fragment] = mask
        return cls(len(row_ids) / total if total else 0.0, masks)

    def admits(self, row_ids: np.ndarray) -> np.ndarray:
        """Which of ``row_ids`` (Lance's ``_rowid``: fragment id in the high 32 bits) are admitted."""
        admitted = np.zeros(len(row_ids), dtype=bool)
        for i, row_id in enumerate(row_ids.tolist()):
            mask = self.masks.get(row_id >> 32)
            offset = row_id & 0xFFFFFFFF
            admitted[i] = mask is not None and offset < len(mask) and bool(mask[offset])
        return admitted


def _quote(value: str) -> str:
    """A SQL string literal: the only way a caller's text enters a LanceDB filter."""
    return "'" + str(value).replace("'", "''") + "'"


def _strings(name: str, value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v for v in values) or len(values) > 100:
        raise FilterError(f"filter {name!r} takes a non-empty string or a list of up to 100 of them")
    return values


def access_clause(groups: Iterable[str]) -> str:
    """Rows tagged with at least one of ``groups``; rows without groups match nothing (deny by default)."""
    listed = sorted(set(groups))
    if not listed:
        return "false"
    return f"array_has_any(access_groups, make_array({', '.join(_quote(g) for g in listed)}))"


def effective_groups(caller_groups: Iterable[str], filters: dict[str, Any] | None) -> frozenset[str]:
    """The caller's groups, narrowed by a ``groups`` filter; a group the caller lacks is refused."""
    held = frozenset(caller_groups)
    wanted = (filters or {}).get("groups")
    if wanted is None:
        return held
    asked = frozenset(_strings("groups", wanted))
    if asked - held:
        raise GroupNotAllowedError(
            f"filter names access groups the caller does not hold: {', '.join(sorted(asked - held))}"
        )
    return asked


def filter_clause(filters: dict[str, Any] | None, columns: frozenset[str]) -> list[str]:
    """SQL conditions for the metadata filters (the ``groups`` filter is handled with access control)."""
    clauses = []
    for name, value in sorted((filters or {}).items()):
        if name not in FILTERABLE_FIELDS:
            raise FilterError(
                f"unknown filter field {name!r}; filterable fields: {', '.join(sorted(FILTERABLE_FIELDS))}"
            )
        column, how = FILTERABLE_FIELDS[name]
        if how == "groups":
            continue
        if column not in columns:
            raise FilterError(f"filter {name!r}: the active index has no {column!r} column (rebuild it)")
        if how == "prefix":
            (prefix,) = _strings(name, value) if isinstance(value, str) else (None,)
            if prefix is None:
                raise FilterError(f"filter {name!r} takes one string")
            clauses.append(f"starts_with({column}, {_quote(prefix)})")
        elif how == "in":
            clauses.append(f"{column} IN ({', '.join(_quote(v) for v in _strings(name, value))})")
        else:
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise FilterError(f"filter {name!r} takes an integer or a list of integers")
            clauses.append(f"{column} IN ({', '.join(str(int(v)) for v in values)})")
    return clauses


class Searcher:
    """Answers queries against the active LanceDB table with the model that built it."""

    def __init__(
        self,
        db: lancedb.DBConnection,
        table_name: str,
        embedder: Embedder | Sequence[Embedder],
        refresh_seconds: float = 0.0,
        physical: str = "",
        resolve: Callable[[dict], Embedder | None] | None = None,
    ):
        """``physical`` pins one model's table (a promotion candidate) instead of following the active one;
        ``resolve`` finds the embedder of a table's model record (``table_model``) whose model id is not
        given (after a promotion)."""
        self.db = db
        self.logical = table_name
        self.physical = physical
        self.resolve = resolve
        embedders = embedder if isinstance(embedder, Sequence) else [embedder]
        self.embedders = {e.model_id: e for e in embedders}
        self.refresh_seconds = refresh_seconds
        self.encode_query: Callable[[Embedder, str], np.ndarray] | None = None
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self.table: lancedb.table.Table | None = None
        self._state: IndexState | None = None
        self._pointer: lancedb.table.Table | None = None
        self._pointer_version = -1
        self._active: str | None = None
        self._dataset: tuple[lance.LanceDataset | None, str] = (None, "")
        self._visible: dict[tuple[str, int, str], VisibleRows] = {}
        # How vector queries were filtered (postfilter, fallback, prefilter, unfiltered, none_visible).
        self.filter_plans: Counter[str] = Counter()
        self.embedder  # noqa: B018  (fail fast: no index, or one this process cannot embed queries for)

    @property
    def embedder(self) -> Embedder:
        """The embedder of the active table's model (raises ModelMismatchError when none is loaded)."""
        state = self.state()
        found = self.embedders.get(state.model_id)
        if found is None and self.resolve is not None:
            found = self.resolve(table_model(self.current()[0]))
            if found is not None and found.model_id == state.model_id:
                self.embedders[state.model_id] = found
            else:
                found = None
        if found is None:
            raise ModelMismatchError(
                f"index {self.logical!r} ({state.table_name}) was built with {state.model_id}; queries "
                f"embedded with {', '.join(sorted(self.embedders))} would not be comparable"
            )
        return found

    def state(self, force: bool = False) -> IndexState:
        return self.current(force)[1]

    def current(self, force: bool = False) -> tuple[lancedb.table.Table, IndexState]:
        """Follow the active pointer and the table's latest version, at most every ``refresh_seconds``;
        the table and its state are returned together so a request never mixes two tables."""
        now = time.monotonic()
        with self._lock:
            if force or self._state is None or now - self._checked_at >= self.refresh_seconds:
                name = self._active_name()
                if name is None:
                    raise LookupError(f"no LanceDB index {self.logical!r}: run `groundwork run` first")
                if self.table is None or self.table.name != name:
                    table = open_table(self.db, name)
                    if table is None:
                        raise LookupError(f"the active table {name!r} of {self.logical!r} does not exist")
                    self.table = table
                else:
                    self.table.checkout_latest()
                if self._state is None or (self._state.table_name, self._state.version) != (
                    name,
                    self.table.version,
                ):
                    model = table_model(self.table)
                    self._state = IndexState(
                        name,
                        self.table.version,
                        model.get("model_id", ""),
                        int(model.get("dimension", 0)),
                        frozenset(self.table.schema.names),
                    )
                self._checked_at = now
            return self.table, self._state

    def _active_name(self) -> str | None:
        """The active table's name; the pointer table is read again only when it has a new version."""
        if self.physical:
            return self.physical
        if self._pointer is None:
            self._pointer = open_table(self.db, f"{self.logical}{POINTER_SUFFIX}")
            if self._pointer is None:
                return None
        else:
            self._pointer.checkout_latest()
        if self._pointer.version != self._pointer_version:
            self._active = active_table_name(self.db, self.logical)
            self._pointer_version = self._pointer.version
        return self._active

    def embed(self, query: str) -> np.ndarray:
        """The query's vector from the active table's model (through ``encode_query`` when set: the
        server batches concurrent requests' queries)."""
        embedder = self.embedder
        if self.encode_query is not None:
            return self.encode_query(embedder, query)
        return embedder.encode([query])[0]

    def query_vector(
        self, query: str, vector: Sequence[float] | np.ndarray | None = None, state: IndexState | None = None
    ) -> np.ndarray:
        """The unit vector to search with: ``vector`` (one of the index's dimension, else ValueError)
        normalised, or ``query`` embedded with the active table's model."""
        if vector is None:
            return self.embed(query)
        dimension = (state or self.state()).dimension
        if len(vector) != dimension:
            raise ValueError(f"vector has {len(vector)} dimensions; the index has {dimension}")
        vector = np.asarray(vector, dtype=np.float32)
        return vector / (np.linalg.norm(vector) or 1.0)

    def search(
        self,
        query: str,
        k: int = 5,
        mode: SearchMode = "vector",
        filters: dict[str, Any] | None = None,
        groups: Iterable[str] | None = None,
        vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """Top ``k`` chunks; ``groups`` (the caller's access groups) restricts them on the server.

        ``groups=None`` searches every chunk (the local CLI); the HTTP service always passes the
        caller's groups. ``vector`` skips embedding (the caller embedded the query already).
        """
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {mode!r}: use vector, fulltext or hybrid")
        query = query.strip()
        if not query and (vector is None or mode != "vector"):
            raise ValueError("empty query")
        table, state = self.current()
        conditions = filter_clause(filters, state.columns)
        metadata_filtered = bool(conditions)
        allowed: frozenset[str] | None = None  # the caller's groups: every hit must hold one of them
        access: frozenset[str] | None = None  # the groups the access clause admits, if there is one
        if groups is not None:
            allowed = access = effective_groups(groups, filters)
        elif filters and "groups" in filters:
            access = frozenset(_strings("groups", filters["groups"]))
        if access is not None:
            conditions.insert(0, access_clause(access))
        where = " AND ".join(f"({c})" for c in conditions) if conditions else None
        access_only = access is not None and not metadata_filtered

        def fulltext(n: int) -> list[dict]:
            """BM25 over the full-text index, on the Lance dataset in this thread: LanceDB's query builder
            ran every query through its one background event loop (3.1 ms against 0.8 ms per query, and
            a queue under concurrency)."""
            columns = [*_columns(state), "_score"]
            found = self._lance(table, state).to_table(
                full_text_query=query, columns=columns, filter=where, prefilter=True, limit=n
            )
            return _rows(found)

        if mode != "fulltext":
            vector = self.query_vector(query, vector, state)
        if mode == "fulltext":
            scored = [(r, _score(r, mode)) for r in fulltext(k)]
        elif mode == "vector":
            rows = self._nearest(table, state, vector, k, where, access_only)
            scored = [(r, _score(r, mode)) for r in rows]
        else:
            n = max(k, HYBRID_CANDIDATES)
            scored = fuse_by_document(
                self._nearest(table, state, vector, n, where, access_only),
                fulltext(n),
            )[:k]
        hits = [_hit(r, score, state) for r, score in scored]
        if allowed is not None:
            hits = _only_visible(hits, allowed)
        return hits

    def _nearest(
        self,
        table: lancedb.table.Table,
        state: IndexState,
        vector: np.ndarray,
        n: int,
        where: str | None,
        access_only: bool,
    ) -> list[dict]:
        """The ``n`` nearest chunks passing ``where``, filtered after the search when safe and faster;
        ``access_only``: ``where`` is the access clause alone."""
        dataset = self._lance(table, state)
        columns = _columns(state)
        if where is None:
            self.filter_plans["unfiltered"] += 1
            return self._reranked(dataset, vector, columns, n * VECTOR_SEARCH_REFINE, n)
        if access_only:
            visible = self._visible_rows(dataset, state, where)
            if visible.share == 0.0:
                self.filter_plans["none_visible"] += 1
                return []
            candidates = math.ceil(n * POSTFILTER_OVERFETCH / visible.share)
            if candidates <= POSTFILTER_MAX_CANDIDATES:
                rows = self._reranked(dataset, vector, columns, candidates, n, visible)
                if rows is not None:
                    self.filter_plans["postfilter"] += 1
                    return rows
                self.filter_plans["postfilter_fallback"] += 1
        self.filter_plans["prefilter"] += 1
        return _rows(nearest_arrow(dataset, vector, n, columns, where, prefilter=True))

    @staticmethod
    def _reranked(
        dataset: lance.LanceDataset,
        vector: np.ndarray,
        columns: list[str],
        candidates: int,
        n: int,
        visible: VisibleRows | None = None,
    ) -> list[dict] | None:
        """The ``n`` nearest rows among the index's ``candidates`` nearest that ``visible`` admits, ranked
        on full-precision vectors, with ``columns``; None when ``visible`` admits fewer.

        Only row ids come out of the index; the access check is a lookup by row id, and one take reads
        the vectors and hit columns of the first ``n × RERANK_POOL`` survivors: at 1M rows about 4 ms
        against 10 ms when every candidate's groups were read and Lance re-ranked them
        (docs/benchmarks.md).
        """
        found = nearest_arrow(dataset, vector, candidates, [], refine_factor=None, with_row_id=True)
        row_ids = found["_rowid"].to_numpy()
        if visible is not None:
            row_ids = row_ids[visible.admits(row_ids)]
            if len(row_ids) < n:
                return None
        if not len(row_ids):
            return []
        pool = row_ids[: math.ceil(n * RERANK_POOL)]
        return _rows(rerank_exact(dataset, vector, pool, n, columns))

    def _lance(self, table: lancedb.table.Table, state: IndexState) -> lance.LanceDataset:
        """The Lance dataset of ``state``'s table and version; a new version keeps the index caches."""
        with self._lock:
            dataset, name = self._dataset
            if dataset is None or name != state.table_name:
                dataset = table.to_lance()
            if dataset.version != state.version:
                dataset = dataset.checkout_version(state.version)
            self._dataset = (dataset, state.table_name)
            return dataset

    def _visible_rows(self, dataset: lance.LanceDataset, state: IndexState, where: str) -> VisibleRows:
        """The rows ``where`` admits, found once per table version (the label-list index answers in
        milliseconds at 100k rows) and kept for the most recent VISIBLE_ROWS_CACHE_SIZE clauses."""
        key = (state.table_name, state.version, where)
        found = self._visible.get(key)
        if found is None:
            found = VisibleRows.of(dataset, where)
            with self._lock:
                while len(self._visible) >= VISIBLE_ROWS_CACHE_SIZE:
                    self._visible.pop(next(iter(self._visible)), None)
                self._visible[key] = found
        return found

    def document(self, document_id: str, groups: Iterable[str] | None = None) -> list[Hit]:
        """The chunks of one document the caller may see, in order (none: unknown or not visible)."""
        table, state = self.current()
        where = f"document_id = {_quote(document_id)}"
        if groups is not None:
            where = f"({access_clause(groups)}) AND ({where})"
        rows = _rows(table.search().where(where).select(_columns(state)).limit(None).to_arrow())
        hits = [_hit(r, 1.0, state) for r in sorted(rows, key=lambda r: r["chunk_index"])]
        return hits if groups is None else _only_visible(hits, frozenset(groups))

    def row_count(self) -> int:
        return self.current()[0].count_rows()

    def chunk_paths(self, chunk_ids: Iterable[str]) -> dict[str, str]:
        """Chunk id → its document's path, for the ids still in the active table (feedback's gold paths)."""
        ids = list(dict.fromkeys(chunk_ids))
        if not ids:
            return {}
        table, _ = self.current()
        where = f"chunk_id IN ({', '.join(_quote(i) for i in ids)})"
        rows = table.search().where(where).select(["chunk_id", "path"]).limit(len(ids)).to_arrow()
        return dict(zip(rows["chunk_id"].to_pylist(), rows["path"].to_pylist(), strict=True))


def _columns(state: IndexState) -> list[str]:
    """The columns a hit is read from: with ``citation`` where the table has it (every table built or
    synced since it exists)."""
    return CITED_COLUMNS if CITATION_COLUMN in state.columns else RESULT_COLUMNS


def _rows(found: pa.Table) -> list[dict]:
    """``found``'s rows as dicts, each ``citation`` unpacked into its fields."""
    rows = found.to_pylist()
    if CITATION_COLUMN in found.column_names:
        for row in rows:
            citation = row.pop(CITATION_COLUMN)
            if citation is None:
                raise LookupError(f"chunk row without its {CITATION_COLUMN!r}: not written by Groundwork")
            row.update(json.loads(citation))
    return rows


def _hit(row: dict, score: float, state: IndexState) -> Hit:
    pattern = injection_match(row["text"] or "")
    return Hit(
        chunk_id=row["chunk_id"],
        document_id=row["document_id"],
        chunk_index=row["chunk_index"],
        path=row["path"],
        title=row["title"],
        heading_path=row["heading_path"] or "",
        page=row["page"],
        text=row["text"],
        score=score,
        delta_version=row["delta_version"],
        table_version=state.version,
        table_name=state.table_name,
        access_groups=tuple(row["access_groups"] or ()),
        injection_suspected=pattern is not None,
        injection_pattern=pattern,
    )


def may_see(groups: frozenset[str], held: Iterable[str] | None) -> bool:
    """The access rule in Python, as ``access_clause`` states it in SQL: at least one group in common."""
    return not groups.isdisjoint(held or ())


def _only_visible(hits: list[Hit], allowed: frozenset[str]) -> list[Hit]:
    """Defence in depth behind the prefilter: a hit outside the caller's groups is dropped, never served."""
    visible = [h for h in hits if may_see(allowed, h.access_groups)]
    if len(visible) != len(hits):
        log.error("access filter let %d chunk(s) through; dropped", len(hits) - len(visible))
    return visible


def _score(row: dict, mode: SearchMode) -> float:
    """Higher is better in both single modes: cosine similarity or BM25 score."""
    if mode == "vector":
        return round(1.0 - float(row["_distance"]), 4)
    return round(float(row["_score"]), 4)


def fuse_by_document(
    *ranked_lists: list[dict], rrf_k: int = RRF_K, weights: Sequence[float] | None = None
) -> list[tuple[dict, float]]:
    """Reciprocal-rank fusion of documents, then their chunks: (row, score) pairs, best first.

    Each list counts a document once, at the rank of its best chunk, so a page that fills one mode's
    top ranks with many chunks cannot push other pages out (chunk-level RRF let it: on the Git docs
    benchmark hybrid lost recall@5 to vector alone). The result goes round by round: first the best chunk
    (by chunk-level RRF) of every document in fused order, then every document's second chunk, and so on,
    so the top k chunks come from as many relevant documents as there are. Documents with the same fused
    score (ranks 2 and 3 against 3 and 2 are frequent) keep the order of the first list, the vector one
    in ``Searcher.search``. The score is the document's fused score, capped by the score before it so
    that scores never increase down the list (a second round's chunk scores as the last first-round one).
    ``weights`` (one per list, 1 each by default) scale each list's contributions
    (``benchmarks/fusion_choice.py`` measures weights chosen on held-out questions).
    """
    document_score: dict[str, float] = {}
    chunk_score: dict[str, float] = {}
    rows: dict[str, dict] = {}
    for ranked, weight in zip(ranked_lists, weights or [1.0] * len(ranked_lists), strict=True):
        documents: dict[str, None] = {}
        for rank, row in enumerate(ranked, start=1):
            chunk_score[row["chunk_id"]] = chunk_score.get(row["chunk_id"], 0.0) + weight / (rrf_k + rank)
            rows.setdefault(row["chunk_id"], row)
            documents.setdefault(row["document_id"], None)
        for rank, document in enumerate(documents, start=1):
            document_score[document] = document_score.get(document, 0.0) + weight / (rrf_k + rank)
    documents = sorted(document_score, key=lambda d: -document_score[d])  # stable: first list's order
    chunks_of: dict[str, list[str]] = {d: [] for d in documents}
    for c in sorted(rows, key=lambda c: -chunk_score[c]):
        chunks_of[rows[c]["document_id"]].append(c)
    order = [
        chunks_of[d][depth]
        for depth in range(max(len(v) for v in chunks_of.values()) if chunks_of else 0)
        for d in documents
        if depth < len(chunks_of[d])
    ]
    fused, floor = [], float("inf")
    for c in order:
        floor = min(floor, round(document_score[rows[c]["document_id"]], 6))
        fused.append((rows[c], floor))
    return fused
