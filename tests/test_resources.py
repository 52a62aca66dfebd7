"""Resources and settings: locations from the environment, the embedder's device and output, MLflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.embedding_model import encode, resolve_device
from resources import EmbedderResource, MLflowResource, Settings

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="GPU test: torch sees no CUDA device here"
)


def test_every_location_defaults_under_home(tmp_path):
    s = Settings(home=tmp_path)
    assert s.landing_uri == str(tmp_path / "landing")
    assert s.documents_landing == str(tmp_path / "landing" / "documents")
    assert s.delta_uri == str(tmp_path / "delta")
    assert s.lancedb_uri == str(tmp_path / "lancedb")
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert s.dagster_home == tmp_path / "dagster"


def test_environment_overrides_each_location(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path))
    monkeypatch.setenv("GROUNDWORK_DELTA_URI", "s3a://lake/delta")
    monkeypatch.setenv("GROUNDWORK_SPARK_MASTER", "spark://127.0.0.1:7077")
    s = Settings()
    assert s.delta_uri == "s3a://lake/delta"
    assert s.lancedb_uri == str(tmp_path / "lancedb")
    assert s.spark_master == "spark://127.0.0.1:7077"


def test_device_selection_without_cuda():
    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda"
    else:
        assert resolve_device("auto") == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def test_embedder_loads_offline_and_returns_unit_vectors():
    embedder = EmbedderResource(device="cpu")
    vectors = embedder.encode(["How do I return boots?", "Tent pole repair", "How can boots be returned?"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[1]
    assert embedder.encode([]).shape == (0, 384)
    assert embedder.model_id.startswith("all-MiniLM-L6-v2@")


def test_overlapped_encoding_matches_the_library_in_input_order():
    texts = [f"{'long ' * (i % 7)}question number {i} about returns" for i in range(23)]
    model = EmbedderResource(device="cpu").model()
    ours = encode(model, texts, batch_size=4)  # six batches, tokenized on other threads
    library = model.encode(texts, batch_size=4, convert_to_numpy=True, normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == (23, 384)
    assert np.allclose(ours, library, atol=1e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


@pytest.mark.gpu
@requires_cuda
def test_gpu_path_matches_cpu_in_half_precision():
    texts = ["Return policy for footwear", "Stove maintenance schedule"] * 8
    gpu = EmbedderResource(device="cuda").encode(texts)
    cpu = EmbedderResource(device="cpu").encode(texts)
    assert (gpu * cpu).sum(axis=1).min() > 0.99


def test_mlflow_resource_uses_a_local_sqlite_store(tmp_path):
    settings = Settings(home=tmp_path)
    tracking = MLflowResource(tracking_uri=settings.mlflow_tracking_uri)
    mlflow = tracking.configure()
    # Not mlflow.set_experiment: it exports MLFLOW_EXPERIMENT_ID, which would leak into later tests.
    with mlflow.start_run(experiment_id=tracking.experiment_id("groundwork-test")) as run:
        mlflow.log_metric("recall_at_5", 0.8)
    stored = mlflow.get_run(run.info.run_id)
    assert stored.data.metrics["recall_at_5"] == 0.8
    assert (tmp_path / "mlflow" / "mlflow.db").exists()
