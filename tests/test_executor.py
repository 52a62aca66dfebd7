"""Steps side by side in one process (pipelines/executor.py), and the shared state that makes it safe:
each thread's own Spark session (Delta's transaction id is session state), one delta-rs writer per table
with retried commits, the MLflow store opened once, no half-imported torch seen by another step.
"""

import subprocess
import sys
import threading
import time
import uuid

import pyarrow as pa
import pytest
from conftest import groundwork_env, make_settings
from dagster import (
    AssetCheckResult,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    asset,
    asset_check,
    define_asset_job,
)
from deltalake import DeltaTable, write_deltalake

from pipelines.cli import execute_with_job_executor
from pipelines.executor import threaded_executor
from resources.lakehouse import Lakehouse, commit_retried, read_table
from resources.spark import Spark

STEP_S = 1.0


def timed_graph(spans: dict[str, tuple[float, float, str]], fail_check: bool = False) -> Definitions:
    """a and b independent (each sleeps STEP_S), c after both; a blocking check on b."""

    def record(name: str) -> None:
        start = time.monotonic()
        time.sleep(STEP_S)
        spans[name] = (start, time.monotonic(), threading.current_thread().name)

    @asset
    def a() -> MaterializeResult:
        record("a")
        return MaterializeResult()

    @asset
    def b() -> MaterializeResult:
        record("b")
        return MaterializeResult()

    @asset_check(asset=b, blocking=True)
    def b_is_good() -> AssetCheckResult:
        return AssetCheckResult(passed=not fail_check)

    @asset(deps=[a, b])
    def c() -> MaterializeResult:
        record("c")
        return MaterializeResult()

    return Definitions(
        assets=[a, b, c],
        asset_checks=[b_is_good],
        jobs=[define_asset_job("all")],
        executor=threaded_executor.configured({"max_concurrent": 2}),
    )


def run(defs: Definitions, instance: DagsterInstance, keys=None):
    job = defs.resolve_job_def("all")
    return execute_with_job_executor(job, instance, str(uuid.uuid4()), keys, None)


def test_independent_steps_overlap_and_dependents_wait_for_them():
    spans: dict[str, tuple[float, float, str]] = {}
    with DagsterInstance.ephemeral() as instance:
        result = run(timed_graph(spans), instance)
    assert result.success
    (a0, a1, a_thread), (b0, b1, b_thread), (c0, _, _) = spans["a"], spans["b"], spans["c"]
    assert a_thread != b_thread
    assert a0 < b1 and b0 < a1, f"a and b ran one after the other: {spans}"
    assert c0 >= max(a1, b1), "c started before its upstreams finished"
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"a", "b", "c"}


def test_a_failing_blocking_check_still_stops_its_downstream():
    spans: dict[str, tuple[float, float, str]] = {}
    with DagsterInstance.ephemeral() as instance:
        result = run(timed_graph(spans, fail_check=True), instance)
    assert not result.success
    assert {"a", "b"} <= set(spans) and "c" not in spans
    started = {e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_START}
    failed = {e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE}
    assert "c" not in started and failed == {"b_b_is_good"}


def test_a_failing_step_fails_the_run_and_skips_only_its_downstream():
    @asset
    def broken() -> MaterializeResult:
        raise ValueError("bad input")

    @asset(deps=[broken])
    def after_broken() -> MaterializeResult:
        return MaterializeResult()

    @asset
    def independent() -> MaterializeResult:
        return MaterializeResult()

    defs = Definitions(
        assets=[broken, after_broken, independent],
        jobs=[define_asset_job("all")],
        executor=threaded_executor,
    )
    with DagsterInstance.ephemeral() as instance:
        result = run(defs, instance)
    assert not result.success
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [AssetKey("independent")]
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "broken" and "bad input" in failure.step_failure_data.error.to_string()


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "home")


def in_threads(*targets):
    errors: list[BaseException] = []

    def guarded(target):
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_each_thread_has_its_own_spark_session_over_one_jvm(spark, settings):
    sessions = {}

    def grab(name):
        session = Spark.from_settings(settings).session()
        session.conf.set("groundwork.test.owner", name)
        time.sleep(0.2)
        sessions[name] = (session, session.conf.get("groundwork.test.owner"))

    in_threads(lambda: grab("one"), lambda: grab("two"))
    (one, owner_one), (two, owner_two) = sessions["one"], sessions["two"]
    assert one is not two
    assert one.sparkContext is two.sparkContext is spark.sparkContext
    assert (owner_one, owner_two) == ("one", "two")
    assert Spark.from_settings(settings).session() is spark  # this thread keeps its own


def test_merges_in_two_threads_commit_under_their_own_transaction_ids(spark, settings):
    lakehouse = Lakehouse.from_settings(settings)
    for name in ("left", "right"):
        lakehouse.append(spark.createDataFrame([(1, "old")], "id long, v string"), name)

    def merge(name: str, txn_version: int):
        session = Spark.from_settings(settings).session()
        rows = session.createDataFrame([(1, name, False)], "id long, v string, _delete boolean")
        for attempt in range(3):  # overlapping each other's statements
            lakehouse.apply_changes(session, rows, name, ["id"], txn=(f"test<-{name}", txn_version + attempt))

    in_threads(lambda: merge("left", 10), lambda: merge("right", 20))
    assert lakehouse.transaction_version("left", "test<-left") == 12
    assert lakehouse.transaction_version("right", "test<-right") == 22
    assert lakehouse.transaction_version("left", "test<-right") is None
    assert lakehouse.transaction_version("right", "test<-left") is None


def test_inserts_into_one_table_from_two_threads_all_land(settings):
    lakehouse = Lakehouse.from_settings(settings)
    schema = pa.schema([("key", pa.string()), ("n", pa.int64())])

    def insert(writer: str):
        for version in range(4):
            rows = pa.table({"key": [f"{writer}-{version}"], "n": [version]}, schema=schema)
            lakehouse.insert_new("shared", rows, ["key"], (writer, version))

    in_threads(lambda: insert("w1"), lambda: insert("w2"), lambda: insert("w3"))
    keys = sorted(lakehouse.read_arrow("shared").column("key").to_pylist())
    assert keys == sorted(f"w{w}-{v}" for w in (1, 2, 3) for v in range(4))


def test_a_commit_that_loses_the_race_to_another_writer_is_retried_from_a_fresh_read(tmp_path):
    path = str(tmp_path / "table")
    write_deltalake(path, pa.table({"key": ["a"]}))
    attempts = []

    def merge_b():
        table = DeltaTable(path)  # this attempt's read
        if not attempts:  # another process commits between our read and our commit
            write_deltalake(path, pa.table({"key": ["x"]}), mode="append")
        attempts.append(table.version())
        table.merge(
            pa.table({"key": ["b"]}), "t.key = s.key", source_alias="s", target_alias="t"
        ).when_not_matched_insert_all().execute()

    commit_retried(path, merge_b)
    assert len(attempts) == 2 and attempts[1] > attempts[0]
    assert sorted(read_table(path).column("key").to_pylist()) == ["a", "b", "x"]


# In a fresh interpreter: one thread imports torch as the embedding step (or the CLI's head start) does,
# while this one looks torch up in sys.modules the way scipy's array checks do (GX's metrics and the drift
# checks reach them), under the guard those callers use. A torch without ``Tensor`` yet is a half import.
_HALF_IMPORT_PROBE = """
import sys, threading
from models.embedding_model import import_torch, torch_import_excluded
assert "torch" not in sys.modules
importer = threading.Thread(target=import_torch)
importer.start()
looks = half_imports = 0
while importer.is_alive():
    with torch_import_excluded():
        module = sys.modules.get("torch")
        half_imports += module is not None and not hasattr(module, "Tensor")
    looks += 1
importer.join()
print(looks, half_imports, hasattr(sys.modules["torch"], "Tensor"))
"""


def test_code_beside_the_torch_import_never_sees_a_half_imported_torch(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", _HALF_IMPORT_PROBE],
        env=groundwork_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    looks, half_imports, imported = out.stdout.split()
    assert int(looks) >= 1
    assert int(half_imports) == 0
    assert imported == "True"
