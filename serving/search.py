"""Search the chunk index: vector, full-text or hybrid, refusing an index built with another model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from assets.embeddings.index import nearest, open_active, table_model
from resources.embedder import EmbedderResource

if TYPE_CHECKING:
    import lancedb

SearchMode = Literal["vector", "fulltext", "hybrid"]
RESULT_COLUMNS = [
    "chunk_id",
    "document_id",
    "chunk_index",
    "path",
    "title",
    "heading_path",
    "page",
    "text",
    "delta_version",
    "model_version",
]


@dataclass(frozen=True)
class Hit:
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

    def to_dict(self) -> dict:
        return asdict(self)


class ModelMismatchError(ValueError):
    """The query would be embedded with a different model than the index was built with."""


class Searcher:
    """Answers queries against one LanceDB table with the model that built it."""

    def __init__(
        self, db: lancedb.DBConnection, table_name: str, embedder: EmbedderResource, physical: str = ""
    ):
        """``physical`` names one model's table (a promotion candidate) instead of the active one."""
        table = db.open_table(physical) if physical else open_active(db, table_name)
        if table is None:
            raise LookupError(f"no LanceDB index {table_name!r}: run `groundwork run` first")
        self.table = table
        self.embedder = embedder
        built_with = table_model(self.table).get("model_id")
        if built_with != embedder.model_id:
            raise ModelMismatchError(
                f"index {table_name!r} was built with {built_with}; queries embedded with "
                f"{embedder.model_id} would not be comparable"
            )

    def search(self, query: str, k: int = 5, mode: SearchMode = "vector") -> list[Hit]:
        query = query.strip()
        if not query:
            raise ValueError("empty query")
        if mode == "fulltext":
            builder = self.table.search(query, query_type="fts")
        else:
            vector = self.embedder.encode([query])[0]
            if mode == "hybrid":
                builder = self.table.search(query_type="hybrid").vector(vector).text(query)
            elif mode == "vector":
                builder = nearest(self.table, vector, k)
            else:
                raise ValueError(f"unknown search mode {mode!r}: use vector, fulltext or hybrid")
        rows = builder.select(RESULT_COLUMNS).limit(k).to_list()
        version = self.table.version
        return [
            Hit(
                chunk_id=r["chunk_id"],
                document_id=r["document_id"],
                chunk_index=r["chunk_index"],
                path=r["path"],
                title=r["title"],
                heading_path=r["heading_path"] or "",
                page=r["page"],
                text=r["text"],
                score=_score(r, mode),
                delta_version=r["delta_version"],
                table_version=version,
            )
            for r in rows
        ]


def _score(row: dict, mode: SearchMode) -> float:
    """Higher is better in every mode: cosine similarity, BM25 score, or reciprocal-rank fusion."""
    if mode == "vector":
        return round(1.0 - float(row["_distance"]), 4)
    if mode == "fulltext":
        return round(float(row["_score"]), 4)
    return round(float(row["_relevance_score"]), 4)
