"""Steps side by side in one process: the run's steps in up to ``max_concurrent`` threads.

Every step of a run shares one Spark JVM and one embedding model, so a process per step (Dagster's
multiprocess executor) would start a JVM per step, and one step at a time (the in-process executor) leaves
a core idle while a step waits on the JVM's scheduling, Delta's log and commits: on two cores the sample
run's CPUs were idle 20-45% of its wall time. Independent steps (the bronze tables, the silver tables,
their checks) overlap here; dependencies, blocking checks, retries and the event log are Dagster's own
(``ActiveExecution``), as in the in-process executor this follows. What steps share is made safe where it
lives: each thread has its own Spark session (``resources.spark``: Delta's transaction id is session
state), shared small Delta tables take one writer at a time (``resources.lakehouse.commit_retried``), GX
validates one suite at a time (``quality.validation``), the MLflow store is opened once
(``resources.tracking``).
"""

from __future__ import annotations

import contextvars
import os
import queue
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

from dagster import Field, Int, executor
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import (
    PlanExecutionContext,
    PlanOrchestrationContext,
    StepExecutionContext,
)
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import (
    _handle_compute_log_setup_error,
    _handle_compute_log_teardown_error,
    _trigger_hook,
    dagster_event_sequence_for_step,
)
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.executor.base import Executor

DEFAULT_MAX_CONCURRENT = 2
POLL_S = 0.5
_DONE = object()


@dataclass
class _RunningStep:
    context: StepExecutionContext
    events: list[DagsterEvent] = field(default_factory=list)


def _run_step(step_context: StepExecutionContext, events: queue.Queue) -> None:
    """The step's events into ``events``, then ``_DONE`` (or an error Dagster did not handle)."""
    key = step_context.step.key
    try:
        for event in dagster_event_sequence_for_step(step_context):
            events.put((key, event))
    except BaseException as exc:  # re-raised by the orchestrating thread, as the in-process executor would
        events.put((key, exc))
        return
    events.put((key, _DONE))


class _StepThreads:
    """``size`` threads that run steps. Reused from step to step, so each keeps its Spark session (one per
    thread, resources/spark.py); daemons, so a run that is interrupted does not wait on a step's JVM call."""

    def __init__(self, size: int, events: queue.Queue):
        self._tasks: queue.Queue = queue.Queue()
        self._events = events
        self._size = size
        for n in range(size):
            threading.Thread(target=self._work, name=f"groundwork-step-{n}", daemon=True).start()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            context, step_context = task
            context.run(_run_step, step_context, self._events)

    def submit(self, step_context: StepExecutionContext) -> None:
        # A copy of the orchestrating thread's context: Dagster keeps some state in context variables.
        self._tasks.put((contextvars.copy_context(), step_context))

    def close(self) -> None:
        for _ in range(self._size):
            self._tasks.put(None)


def threaded_plan_iterator(
    job_context: PlanExecutionContext, execution_plan: ExecutionPlan, max_concurrent: int
) -> Iterator[DagsterEvent]:
    """``inner_plan_execution_iterator`` with up to ``max_concurrent`` steps running at once."""
    compute_log_manager = job_context.instance.compute_log_manager
    step_keys = [step.key for step in execution_plan.get_steps_to_execute_in_topo_order()]
    with ExitStack() as stack:
        concurrency = stack.enter_context(
            InstanceConcurrencyContext(job_context.instance, job_context.dagster_run)
        )
        active = stack.enter_context(
            execution_plan.start(
                retry_mode=job_context.retry_mode,
                instance_concurrency_context=concurrency,
                step_dependency_config=job_context.step_dependency_config,
            )
        )
        capture = stack.enter_context(ExitStack())
        log_key = compute_log_manager.build_log_key_for_run(job_context.run_id, create_compute_log_file_key())
        try:
            log_context = capture.enter_context(compute_log_manager.capture_logs(log_key))
            yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)
        except Exception:
            yield from _handle_compute_log_setup_error(job_context, sys.exc_info())

        events: queue.Queue = queue.Queue()
        threads = _StepThreads(max_concurrent, events)
        stack.callback(threads.close)
        running: dict[str, _RunningStep] = {}
        while not active.is_complete or running:
            if not active.is_complete:
                steps = active.get_steps_to_execute(limit=max_concurrent - len(running))
                yield from active.concurrency_event_iterator(job_context)
                for step in steps:
                    step_context = job_context.for_step(step, active.get_known_state())
                    running[step.key] = _RunningStep(step_context)
                    threads.submit(step_context)
                if not running:
                    active.sleep_til_ready()
                    continue
            try:  # a timeout, so that a retry's delay or a freed concurrency slot is noticed meanwhile
                key, item = events.get(timeout=POLL_S)
            except queue.Empty:
                continue
            step = running[key]
            if isinstance(item, BaseException):
                raise item
            if item is not _DONE:
                step.events.append(item)
                yield item
                active.handle_event(item)
                continue
            del running[key]
            active.verify_complete(job_context, key)
            for event in active.plan_events_iterator(job_context):
                step.events.append(event)
                yield event
            yield from _trigger_hook(step.context, step.events)
        try:
            capture.close()
        except Exception:
            yield from _handle_compute_log_teardown_error(job_context, sys.exc_info())


class ThreadedExecutor(Executor):
    def __init__(self, retries: RetryMode, max_concurrent: int = DEFAULT_MAX_CONCURRENT):
        self._retries = retries
        self.max_concurrent = max(1, max_concurrent)

    @property
    def retries(self) -> RetryMode:
        return self._retries

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        keys = execution_plan.step_keys_to_execute
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {os.getpid()}), up to {self.max_concurrent} at once",
            event_specific_data=EngineEventData.in_process(os.getpid(), keys),
        )
        yield from iter(
            ExecuteRunWithPlanIterable(
                execution_plan=plan_context.execution_plan,
                iterator=lambda job_context, execution_plan: threaded_plan_iterator(
                    job_context, execution_plan, self.max_concurrent
                ),
                execution_context_manager=PlanExecutionContextManager(
                    job=plan_context.job,
                    retry_mode=plan_context.retry_mode,
                    execution_plan=plan_context.execution_plan,
                    run_config=plan_context.run_config,
                    dagster_run=plan_context.dagster_run,
                    instance=plan_context.instance,
                    raise_on_error=plan_context.raise_on_error,
                    output_capture=plan_context.output_capture,
                ),
            )
        )


@executor(
    name="threaded",
    config_schema={
        "retries": get_retries_config(),
        "max_concurrent": Field(
            Int,
            default_value=DEFAULT_MAX_CONCURRENT,
            description="Steps running at once in the run's process (1: one at a time).",
        ),
    },
)
def threaded_executor(init_context) -> ThreadedExecutor:
    """Up to ``max_concurrent`` steps at once, in threads of the run's one process (one JVM, one model)."""
    config = init_context.executor_config
    return ThreadedExecutor(
        retries=RetryMode.from_config(config["retries"]),
        max_concurrent=config["max_concurrent"],
    )
