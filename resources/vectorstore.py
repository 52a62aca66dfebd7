"""The LanceDB connection: the vector index that serving reads."""

from __future__ import annotations

import os

# Lance logs a deprecation warning on every query that selects columns; keep its log to errors.
os.environ.setdefault("LANCEDB_LOG", "error")

import lancedb
from dagster import ConfigurableResource


class LanceDBResource(ConfigurableResource):
    """A LanceDB database: a folder embedded, or an object-store URI (``s3://...``) to scale out."""

    uri: str
    table_name: str = "chunk_embeddings"
    vector_index_min_rows: int = 10_000
    keep_versions_days: float = 7.0
    # object_store options (endpoint, region, credentials) for an ``s3://`` URI; empty on a local disk.
    storage_options: dict[str, str] = {}  # noqa: RUF012  (pydantic copies field defaults)

    def connect(self) -> lancedb.DBConnection:
        return lancedb.connect(self.uri, storage_options=self.storage_options or None)
