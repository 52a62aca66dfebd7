"""LanceDB, the chunk index that pipelines write and serving reads: the one home of its code (no Dagster).

- ``LanceDBStore`` (here): where the database is and how to connect (a folder, or ``s3://`` with the
  object-store options);
- ``tables``: schema, model identity, citations and the active-table pointer;
- ``sync``: embedding only what changed, deletes, index maintenance;
- ``query``: nearest neighbours, exact re-ranking, row takes (serving builds on them).
"""

from __future__ import annotations

import os

# Lance logs a deprecation warning on every query that selects columns; keep its log to errors.
os.environ.setdefault("LANCEDB_LOG", "error")

import lancedb
from pydantic import BaseModel

from resources.settings import Settings


class LanceDBStore(BaseModel):
    """A LanceDB database: a folder embedded, or an object-store URI (``s3://...``) to scale out."""

    uri: str
    table_name: str = "chunk_embeddings"
    vector_index_min_rows: int = 10_000
    keep_versions_days: float = 7.0
    # object_store options (endpoint, region, credentials) for an ``s3://`` URI; empty on a local disk.
    storage_options: dict[str, str] = {}

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(
            uri=s.lancedb_uri,
            table_name=s.embeddings_table,
            vector_index_min_rows=s.vector_index_min_rows,
            keep_versions_days=s.lancedb_keep_versions_days,
            storage_options=s.object_store_options(),
        )

    def connect(self) -> lancedb.DBConnection:
        return lancedb.connect(self.uri, storage_options=self.storage_options or None)
