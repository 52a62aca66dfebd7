"""A searcher that follows the registry: the model behind the ``champion`` alias, over the active table.

Build one per request (about 20 ms: one registry lookup and one pointer read; the model itself stays
loaded per process) or keep one for a few seconds: a promotion or rollback then takes effect without
a restart. Promotion and rollback move the alias and the table pointer together; if they ever disagree
the searcher refuses (``ModelMismatchError``) rather than compare vectors of two models.
"""

from __future__ import annotations

from typing import Any

from models.model_registry import resolve_embedder
from serving.search import Searcher


def champion_searcher(resources: dict[str, Any], table_name: str) -> Searcher:
    """``resources`` as built by ``resources.build_resources``; ``table_name`` the logical index name."""
    embedder = resources["embedder"]
    db = resources["lancedb"].connect()
    if embedder.registry_alias:
        from assets.embeddings.index import active_table_name

        if active_table_name(db, table_name) is None:
            raise LookupError(f"no LanceDB index {table_name!r}: run `groundwork run` first")
        embedder = resolve_embedder(resources["mlflow"], embedder, alias=embedder.registry_alias)
    return Searcher(db, table_name, embedder)
