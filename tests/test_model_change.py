"""A model change builds a new index beside the current one, switches only when it validates, and can
be rolled back; queries are always embedded with the active index's model."""

from __future__ import annotations

import pytest
from conftest import materialized, run_documents

from models.model_registry import resolve_embedder
from quality import suites
from resources import EmbedderResource, build_resources
from resources.lancedb.tables import activate, activation_history, active_table_name, open_active
from serving.search import ModelMismatchError, Searcher

pytestmark = pytest.mark.slow
CANDIDATE = EmbedderResource(model_version="2.0.0-candidate")


def test_new_model_builds_beside_switches_and_rolls_back(small_home):
    settings = small_home
    resources = build_resources(settings)
    db = resources["lancedb"].connect()
    first = materialized(run_documents(settings))
    champion = active_table_name(db, settings.embeddings_table)
    # The pipeline resolved the registry's champion; CANDIDATE is pinned (no registry alias).
    registered = resolve_embedder(resources["mlflow"], resources["embedder"])
    assert champion == first["chunk_embeddings"]["lancedb_table"]

    second = materialized(run_documents(settings, embedder=CANDIDATE))
    candidate = second["chunk_embeddings"]["lancedb_table"]
    assert candidate != champion and second["chunk_embeddings"]["activated"] is True
    assert second["chunk_embeddings"]["chunks_embedded"] == first["chunk_embeddings"]["chunks_embedded"]
    assert active_table_name(db, settings.embeddings_table) == candidate
    assert db.open_table(champion).count_rows() == first["chunk_embeddings"]["dagster/row_count"]  # kept

    with pytest.raises(ModelMismatchError):
        Searcher(db, settings.embeddings_table, registered)
    assert Searcher(db, settings.embeddings_table, CANDIDATE).search("return window", k=1)

    # A model pinned outside the registry is switched back by re-activating the champion's table (the
    # registry's rollback, models.promotion.rollback, moves the alias and this pointer together).
    activate(db, settings.embeddings_table, champion)
    assert open_active(db, settings.embeddings_table).name == champion
    assert Searcher(db, settings.embeddings_table, registered).search("return window", k=1)
    assert [r["table_name"] for r in activation_history(db, settings.embeddings_table)] == [
        champion,
        candidate,
        champion,
    ]


def test_a_candidate_that_fails_validation_is_not_activated(small_home, monkeypatch):
    settings = small_home
    db = build_resources(settings)["lancedb"].connect()
    run_documents(settings)
    champion = active_table_name(db, settings.embeddings_table)
    # Validation that no table can pass: the candidate is built but must not go live.
    original = suites.chunk_embeddings_suite
    monkeypatch.setattr(
        suites, "chunk_embeddings_suite", lambda rows, dimension: original(rows + 1, dimension)
    )
    result = run_documents(settings, raise_on_error=False, embedder=CANDIDATE)
    assert not result.success
    assert "chunk_embeddings" not in materialized(result)
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "chunk_embeddings")
    assert "CandidateRejectedError" in str(failure.step_failure_data.error)
    assert active_table_name(db, settings.embeddings_table) == champion
