"""Shared fixtures: one SparkSession per test run, and one pipeline materialized on the samples.

Everything is real: Spark with Delta, LanceDB on disk, the packaged embedding model, Dagster runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# Each test names its own MLflow store; an experiment exported by the caller's shell belongs to none.
os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)

from dagster import AssetKey, DagsterInstance, Definitions, ExecuteInProcessResult

from assets.structured.assets import current_ingest_day
from pipelines.cli import execute_with_job_executor, seed_landing
from pipelines.definitions import all_assets, build_definitions
from pipelines.executor import threaded_executor
from pipelines.jobs import MAIN_JOB
from quality.checks import quality_checks
from resources import Settings, build_resources
from resources.settings import PROJECT_ROOT, SAMPLES_DIR
from resources.spark import Spark


def pytest_configure(config) -> None:
    # Registered here (not in pyproject.toml) so the marker ships with the tests that use it.
    config.addinivalue_line(
        "markers", "scale_out: a Spark standalone cluster or an S3 endpoint on loopback (pytest -m scale_out)"
    )


# Runs the `groundwork` command in a fresh process, as its console script does, and at exit reports which of
# the watched packages it imported (atexit runs after typer's SystemExit and after uvicorn's graceful
# shutdown; `run` ends with os._exit, which reports first): each test that runs a CLI command also checks
# what it imported (issue 17's lean start-up).
WATCHED_PACKAGES = ["dagster", "pyspark", "mlflow", "great_expectations", "torch"]
ENGINES = {"dagster", "pyspark", "great_expectations"}
_CLI_RUNNER = f"""
import atexit, json, os, sys
stderr = os.fdopen(os.dup(2), "w")  # `groundwork run` sends fd 2 to its log: report to the original
def report():
    loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({WATCHED_PACKAGES!r}))
    print("IMPORTED=" + json.dumps(loaded), file=stderr, flush=True)
atexit.register(report)
_exit = os._exit  # `groundwork run` ends with os._exit (no interpreter teardown, so no atexit)
os._exit = lambda code: (report(), _exit(code))
from pipelines.cli import app
sys.argv = ["groundwork", *sys.argv[1:]]
app()
"""


def groundwork_command(*args: str) -> list[str]:
    """The command line that runs ``groundwork *args`` and reports its imports (``imported_packages``)."""
    return [sys.executable, "-c", _CLI_RUNNER, *args]


def groundwork_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "GROUNDWORK_HOME": str(home),
        "GROUNDWORK_SPARK_MASTER": "local[2]",
        "PYTHONPATH": str(PROJECT_ROOT),
        **extra,
    }


def imported_packages(stderr: str) -> set[str]:
    [line] = [line for line in stderr.splitlines() if line.startswith("IMPORTED=")]
    return set(json.loads(line.removeprefix("IMPORTED=")))


def run_groundwork(
    home: Path, *args: str, check: bool = True, timeout: int = 600, **env: str
) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``groundwork *args`` in a fresh process on ``home``: its result and the packages it imported."""
    out = subprocess.run(
        groundwork_command(*args),
        env=groundwork_env(home, **env),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and out.returncode != 0:
        raise AssertionError(
            f"groundwork {' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}"
            f"\n{out.stderr[-3000:]}"
        )
    return out, imported_packages(out.stderr)


def make_settings(home: Path, **overrides) -> Settings:
    return Settings(home=home, spark_master="local[2]", spark_shuffle_partitions=2, **overrides)


def run_all(
    settings: Settings,
    instance: DagsterInstance | None = None,
    raise_on_error: bool = True,
    partition_key: str | None = None,
    selection: list[str] | None = None,
    **resources,
) -> ExecuteInProcessResult:
    """One real Dagster materialization of every asset (or ``selection`` and their checks), in this process
    (so Spark is shared), with independent steps side by side as `groundwork run` runs them."""
    day = partition_key or current_ingest_day()
    return _materialize(settings, instance, raise_on_error, day, selection, resources)


def _materialize(
    settings: Settings,
    instance: DagsterInstance | None,
    raise_on_error: bool,
    partition_key: str | None,
    selection: list[str] | None,
    resources: dict,
) -> ExecuteInProcessResult:
    defs = Definitions(
        assets=all_assets(settings),
        asset_checks=quality_checks(settings.sources_file),
        resources={**build_resources(settings), **resources},
        executor=threaded_executor,
    )
    job = defs.resolve_implicit_global_asset_job_def()
    keys = [AssetKey(name) for name in selection] if selection else None
    with contextlib.nullcontext(instance) if instance else DagsterInstance.ephemeral() as run_instance:
        run_id = str(uuid.uuid4())
        return execute_with_job_executor(job, run_instance, run_id, keys, partition_key, raise_on_error)


def run_main_job(settings: Settings, instance: DagsterInstance) -> ExecuteInProcessResult:
    """The main job as `groundwork run` runs it: with the Definitions' executor, independent steps side by
    side in this process's threads (pipelines/executor.py)."""
    job = build_definitions(settings).resolve_job_def(MAIN_JOB)
    return execute_with_job_executor(job, instance, str(uuid.uuid4()), None, current_ingest_day())


DOCUMENT_ASSETS = ["bronze_documents", "silver_documents", "document_chunks", "chunk_embeddings"]


def run_documents(settings: Settings, raise_on_error: bool = True, **resources) -> ExecuteInProcessResult:
    """The documents' chain, landing to index, with its blocking checks: for tests that land only
    documents (the structured sources' steps would each start a stream on an empty landing zone).
    Not partitioned: only the structured sources are, by ingest day."""
    return _materialize(settings, None, raise_on_error, None, DOCUMENT_ASSETS, resources)


def materialized(result: ExecuteInProcessResult) -> dict[str, dict]:
    """Asset name → its materialization metadata, as plain values."""
    out = {}
    for event in result.get_asset_materialization_events():
        m = event.materialization
        out[m.asset_key.to_user_string()] = {k: v.value for k, v in m.metadata.items()}
    return out


@dataclass
class PipelineRuns:
    settings: Settings
    first: dict[str, dict]
    second: dict[str, dict]


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("spark-home"))
    return Spark.from_settings(settings.model_copy(update={"spark_driver_memory": "2g"})).session()


@pytest.fixture(scope="session")
def sample_pipeline(tmp_path_factory, worker_id, request) -> PipelineRuns:
    """The whole graph materialized twice on the bundled samples: once from scratch, once with nothing new.

    Built once per test session: under pytest-xdist the first worker to need it builds it in the folder
    the workers share, under a file lock, and the others read it (tests only read this home; one that
    changes a home copies it first). Both runs are recorded in a Dagster instance in the home (as
    `groundwork run` records them), so the UI test serves them.
    """
    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent
    settings = make_settings(shared / "sample-home")
    result = shared / "sample-home.pickle"
    with FileLock(str(shared / "sample-home.lock")):
        if not result.exists():
            request.getfixturevalue("spark")  # this worker's session, shared with its other tests
            seed_landing(settings)
            settings.dagster_home.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PROJECT_ROOT / "dagster.yaml", settings.dagster_home / "dagster.yaml")
            with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
                first = run_main_job(settings, instance)
                assert first.success
                second = run_main_job(settings, instance)
                assert second.success
            result.write_bytes(pickle.dumps((materialized(first), materialized(second))))
    first_meta, second_meta = pickle.loads(result.read_bytes())
    return PipelineRuns(settings, first_meta, second_meta)


@pytest.fixture
def small_home(tmp_path) -> Settings:
    """A landing zone with a few sample documents and no structured files, for incremental tests."""
    settings = make_settings(tmp_path / "home")
    docs = Path(settings.documents_landing)
    for relative in ["policies/return-policy.md", "policies/shipping-policy.md", "faq/gift-cards.md"]:
        (docs / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLES_DIR / "documents" / relative, docs / relative)
    return settings


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """One real Kafka broker (KRaft, 127.0.0.1, a free port, storage under tmp) per test session; stopped
    at its end, so no JVM outlives the tests. Tests name their own topics."""
    from resources.kafka import LocalBroker
    from resources.spark import DEFAULT_JARS_DIR

    jars = os.environ.get("GROUNDWORK_SPARK_JARS_DIR", str(DEFAULT_JARS_DIR))
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), jars)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
