"""A searcher over the active index with the model that built it: what ``groundwork search`` and ``eval`` use.

Promotion and rollback move the registry's ``champion`` alias and the active-table pointer together, so
the active table's model is the champion. The table records where that model's weights are, so a
search loads them without the MLflow client (importing it takes seconds, and Spark with it); only a
table built before it recorded its weights is resolved through the registry.
"""

from __future__ import annotations

from models.model_registry import recorded_embedder, resolve_embedder
from resources.embedder import Embedder
from resources.lancedb import LanceDBStore
from resources.settings import Settings
from resources.tracking import MLflowStore
from serving.search import Searcher


def champion_searcher(settings: Settings) -> Searcher:
    """The searcher over ``settings``' logical index, with the model its active table was built with."""
    from resources.lancedb.tables import active_table_name, table_model

    embedder = Embedder.from_settings(settings)
    db = LanceDBStore.from_settings(settings).connect()
    table_name = settings.embeddings_table
    if embedder.registry_alias:
        active = active_table_name(db, table_name)
        if active is None:
            raise LookupError(f"no LanceDB index {table_name!r}: run `groundwork run` first")
        recorded = recorded_embedder(table_model(db.open_table(active)), embedder)
        embedder = recorded or resolve_embedder(
            MLflowStore.from_settings(settings), embedder, alias=embedder.registry_alias
        )
    return Searcher(db, table_name, embedder)
