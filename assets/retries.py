"""Retries for transient failures only: an engine that is briefly unreachable is retried with exponential
backoff and jitter; bad data or a bug fails at once, with its cause, because retrying cannot fix it.

``@transient_retries`` on an asset, check or op classifies its errors: transient → ``RetryRequested``
with the delay of the ``retries`` resource's policy (``Backoff.EXPONENTIAL``, ``Jitter.PLUS_MINUS``),
anything else → ``Failure(allow_retries=False)`` carrying the error type and message. The decorated
function gains a ``retries: RetriesResource`` parameter, so Dagster hands every such step the policy
built from the settings (``resources/retries.py``). No policy is set job-wide: Dagster's policy retries
every exception, so a missing class or a bad row would be retried too.
"""

from __future__ import annotations

import functools
import inspect
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from dagster import Failure, RetryRequested
from dagster._core.errors import DagsterError

from resources.definitions import RetriesResource

F = TypeVar("F", bound=Callable[..., Any])

# Errors a path or permission problem raises: OSErrors, but no retry will make them go away.
PERMANENT_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
# Engine errors that say "try again": a dropped connection, a busy endpoint, an optimistic-commit conflict.
TRANSIENT_MARKERS = (
    "connection refused",
    "connection reset",
    "connection aborted",
    "broken pipe",
    "timed out",
    "timeout",
    "temporarily unavailable",
    "service unavailable",
    "too many requests",
    "slowdown",
    "throttl",
    "commit conflict",  # LanceDB's optimistic commits (see STACK-NOTES)
    "concurrentappendexception",  # Delta's optimistic commits
    "concurrentdeletereadexception",
    "py4jnetworkerror",  # the JVM gateway went away
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is an I/O or connection error that a later attempt may not hit."""
    for error in _chain(exc):
        if isinstance(error, PERMANENT_OS_ERRORS):
            return False
        if isinstance(error, ConnectionError | TimeoutError | socket.timeout):
            return True
        if isinstance(error, OSError) and error.errno is not None:
            return True
        text = f"{type(error).__name__}: {error}".lower()
        if any(marker in text for marker in TRANSIENT_MARKERS):
            return True
    return False


def describe(exc: BaseException) -> str:
    """``Type: message`` of the error, first line only, bounded: what a person reads first."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}"[:1000]


def transient_retries(fn: F) -> F:
    """Classify the errors of a Dagster compute function (its first argument is the context); the policy
    comes from the ``retries`` resource, which the wrapped function's signature asks Dagster for."""
    signature = inspect.signature(fn)
    if "retries" in signature.parameters:
        raise TypeError(f"{fn.__name__}: @transient_retries adds the `retries` parameter itself")

    @functools.wraps(fn)
    def wrapper(context, *args, retries: RetriesResource, **kwargs):
        try:
            return fn(context, *args, **kwargs)
        except (RetryRequested, Failure, DagsterError):
            raise
        except Exception as exc:
            if is_transient(exc):
                policy = retries.policy()
                wait = max(0.0, policy.calculate_delay(context.retry_number + 1))
                context.log.warning(
                    "transient failure (attempt %d of %d), retrying in %.1fs: %s",
                    context.retry_number + 1,
                    policy.max_retries + 1,
                    wait,
                    describe(exc),
                )
                raise RetryRequested(max_retries=policy.max_retries, seconds_to_wait=wait) from exc
            raise Failure(
                description=f"permanent failure, not retried: {describe(exc)}",
                metadata={"error_type": type(exc).__name__, "error": describe(exc), "transient": False},
                allow_retries=False,
            ) from exc

    resource = inspect.Parameter(
        "retries", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=RetriesResource
    )
    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), resource])
    return wrapper  # type: ignore[return-value]
