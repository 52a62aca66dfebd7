"""The adapted embedder: pairs mined from the corpus alone, never the gold questions; a tiny fine-tune on
the samples becomes a registered version that the existing gate evaluates, and a version made worse on
purpose is refused."""

from __future__ import annotations

import pyarrow as pa
import pytest
from conftest import materialized, run_documents

from models.adaptation import mine_pairs, overlap, short_query
from models.evaluation import load_gold
from models.model_registry import champion_history, champion_version
from resources import build_resources


def _chunks(rows):
    return pa.table({k: [r[i] for r in rows] for i, k in enumerate(["title", "heading_path", "text"])})


def test_pairs_come_from_the_corpus_and_never_from_gold_questions():
    text = "Returns are accepted within 30 days of delivery. Items must be unused and in their box."
    assert short_query("Return policy", "Returns > Window", text) == (
        "Window Returns are accepted within 30 days of delivery."
    )
    chunks = _chunks(
        [
            ("Return policy", "Returns > Window", text),
            ("Shipping", "", "Orders ship within two business days from our warehouse in Ohio, tracked."),
            ("Tiny", "", "too short"),  # not enough text to make a pair
        ]
    )
    pairs = mine_pairs(chunks)
    assert len(pairs) == 2
    assert {p for _, p in pairs} == {
        "Return policy > Returns > Window\n" + text,
        "Shipping\n" + chunks["text"][1].as_py(),
    }
    gold = ["window returns are accepted within 30 days of delivery"]  # normalized, it equals a mined query
    filtered = mine_pairs(chunks, gold)
    assert len(filtered) == 1 and overlap(filtered, gold) == 0
    assert overlap(pairs, gold) == 1


@pytest.mark.slow
def test_a_tiny_fine_tune_is_registered_evaluated_and_gated(small_home, tmp_path):
    settings = small_home
    run_documents(settings)
    resources = build_resources(settings)
    tracking = resources["mlflow"]
    champion = champion_version(tracking)
    gold = load_gold(resources["evaluation"].gold_path)

    from dagster import materialize

    from assets.embeddings.adaptation import adapted_embedder

    def adapt(**config):
        result = materialize(
            [adapted_embedder],
            resources=resources,
            run_config={"ops": {"adapted_embedder": {"config": {"max_steps": 3, "batch_size": 8, **config}}}},
        )
        assert result.success
        return materialized(result)["adapted_embedder"]

    # Trained on mismatched pairs at a high learning rate: worse on the gold set, so the gate refuses it.
    worse = adapt(degrade=True, learning_rate=5e-4, max_steps=6, output_dir=str(tmp_path / "worse"))
    assert worse["decision"] == "refused" and worse["promoted"] is False
    assert worse["candidate_ndcg"] < worse["champion_ndcg"]
    assert worse["champion_version_after"] == champion
    assert champion_version(tracking) == champion

    good = adapt(output_dir=str(tmp_path / "good"))
    version = good["registered_version"]
    assert version not in (champion, worse["registered_version"])
    assert good["train_steps"] == 3 and good["device"] == "cpu" and good["pairs"] > 0
    tags = tracking.client().get_model_version(tracking.embedding_model, version).tags
    assert tags["groundwork.adapted.base_model"] == f"{tracking.embedding_model}@{champion}"
    assert int(tags["groundwork.adapted.pairs"]) == good["pairs"]
    assert tags["groundwork.adapted.gold_overlap"] == "0"
    assert tags["groundwork.promotion"] == good["decision"]
    # The weights are MLflow artifacts of the training run.
    artifacts = [a.path for a in tracking.client().list_artifacts(good["training_mlflow_run_id"], "weights")]
    assert any(p.endswith("config.json") for p in artifacts)
    # Its table was built beside the champion's and evaluated on the gold set.
    db = resources["lancedb"].connect()
    assert good["candidate_table"] in db.list_tables().tables
    assert db.open_table(good["candidate_table"]).count_rows() > 0
    assert set(good["candidate_metrics"]) >= {"vector_hit_at_5", "vector_ndcg_at_10"}
    assert len(gold) > 0
    if good["promoted"]:
        assert champion_version(tracking) == version
        assert champion_history(tracking)[-1]["version"] == version
    else:
        assert champion_version(tracking) == champion


def test_training_is_its_own_job_in_the_gpu_pool_never_part_of_a_refresh(tmp_path):
    from conftest import make_settings
    from dagster import AssetKey

    from pipelines.definitions import build_definitions
    from pipelines.jobs import ADAPT_JOB, MAIN_JOB

    defs = build_definitions(make_settings(tmp_path))
    key = AssetKey("adapted_embedder")
    assert key not in defs.resolve_job_def(MAIN_JOB).asset_layer.executable_asset_keys
    adapt_layer = defs.resolve_job_def(ADAPT_JOB).asset_layer
    assert adapt_layer.executable_asset_keys == {key}
    assert adapt_layer.get(key).assets_def.op.pool == "gpu"
    assert adapt_layer.get(key).assets_def.specs_by_key[key].automation_condition is None
