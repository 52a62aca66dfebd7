"""The adapted embedder: pairs mined from the corpus alone, never the gold questions; a tiny fine-tune on
the samples becomes a registered version that the existing gate evaluates, and a version made worse on
purpose is refused."""

from __future__ import annotations

import pyarrow as pa
import pytest
from conftest import materialized, run_documents

from models.adaptation import mine_pairs, overlap
from models.evaluation import load_gold
from models.model_registry import champion_history, champion_version
from resources import build_resources


def _chunks(rows):
    names = ["path", "title", "heading_path", "text"]
    return pa.table({k: [r[i] for r in rows] for i, k in enumerate(names)})


RETURNS = (
    "Returns are accepted within 30 days of delivery. Items must be unused and in their original box. "
    "Refunds reach the original card within five business days."
)
SHIPPING = (
    "Orders ship within two business days from our warehouse in Ohio. Damaged items and returns ship "
    "back free of charge within 30 days."
)


def test_pairs_come_from_the_corpus_and_never_from_gold_questions():
    chunks = _chunks(
        [
            ("returns.html", "Return policy", "Returns > Window", RETURNS),
            ("shipping.html", "Shipping", "", SHIPPING),
            ("tiny.html", "Tiny", "", "too short"),  # not enough text to make a pair
        ]
    )
    pairs = mine_pairs(chunks, queries_per_chunk=3)
    by_page = {page: [p for p in pairs if p.document == page] for page in ("returns.html", "shipping.html")}
    assert len(by_page["returns.html"]) == 3 and len(by_page["shipping.html"]) == 3
    assert not [p for p in pairs if p.document == "tiny.html"]
    keyword = next(p for p in by_page["returns.html"] if p.positive.endswith(RETURNS))
    assert keyword.query.startswith("Window ") and len(keyword.query.split()) == 5  # heading + 4 words
    for pair in pairs:
        source = RETURNS if pair.document == "returns.html" else SHIPPING
        if pair.positive.endswith(source):
            continue
        # Inverse cloze: a sentence of the chunk is the query, and the passage no longer holds it.
        assert pair.query in source and pair.query not in pair.positive
    # The hard negative comes from another page, never the page the query came from; BM25 picks the
    # other page's chunk that shares the query's words.
    assert all(
        p.negative and not p.negative.endswith(RETURNS if p.document == "returns.html" else SHIPPING)
        for p in pairs
    )
    ict = next(p for p in pairs if p.query == "Returns are accepted within 30 days of delivery.")
    assert ict.negative.endswith(SHIPPING)
    assert len({p.query for p in pairs}) == len(pairs)

    gold = [f"{keyword.query.lower()}?"]  # normalized, it equals a mined query
    filtered = mine_pairs(chunks, gold, queries_per_chunk=3)
    assert len(filtered) == len(pairs) - 1 and overlap(filtered, gold) == 0
    assert overlap(pairs, gold) == 1
    # A held-out chunk is neither a positive nor a negative.
    held = mine_pairs(chunks, exclude_chunks=frozenset({1}))
    assert held and all(SHIPPING not in p.positive + p.negative for p in held)
    assert not mine_pairs(chunks, exclude_chunks=frozenset({1}), hard_negatives=False)[0].negative


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
