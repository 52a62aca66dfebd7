"""Run an expectation suite with Great Expectations 1.x, keeping results and Data Docs on disk.

The suites are code (``quality/suites.py``); every run rebuilds them in a file-backed GX context
under ``GROUNDWORK_HOME/gx``, so its validation results and Data Docs survive the process.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig

from models.embedding_model import torch_import_excluded

logging.getLogger("great_expectations").setLevel(logging.WARNING)


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    observed: Any

    def observed_json(self) -> str:
        return json.dumps(self.observed, default=str)[:2000]


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    success: bool
    outcomes: list[ExpectationOutcome]
    docs_url: str | None = None
    result_id: Any = None  # GX's identifier of the stored validation result (for its Data Docs page)

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]


# GX's file-backed context is not thread-safe (its stores are read, replaced and written per validation):
# checks that run side by side (pipelines/executor.py) validate one at a time; their other steps overlap.
_GX_LOCK = threading.RLock()


@functools.lru_cache(maxsize=4)
def gx_context(root: str):
    """One file-backed GX context per folder and process (creating it costs seconds)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=root)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.variables.save()
    return context


def _replace(store, name: str) -> None:
    if name in [item.name for item in store.all()]:
        store.delete(name)


def validate(
    df: Any,
    suite_name: str,
    expectations: list[gxe.Expectation],
    root: str,
    run_name: str = "adhoc",
    docs: bool = True,
) -> SuiteOutcome:
    """Validate a Spark or pandas DataFrame against ``expectations`` and (``docs``) update the Data Docs.

    Rendering the docs is most of a small validation's time; without ``docs``, ``update_data_docs``
    renders this result's page later, if the caller keeps it.
    """
    with _GX_LOCK, torch_import_excluded():
        return _validate(df, suite_name, expectations, root, run_name, docs)


def _validate(
    df: Any, suite_name: str, expectations: list[gxe.Expectation], root: str, run_name: str, docs: bool
) -> SuiteOutcome:
    context = gx_context(root)
    for store in (context.checkpoints, context.validation_definitions, context.suites):
        _replace(store, suite_name)
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    kind = "pandas" if isinstance(df, pd.DataFrame) else "spark"
    try:
        source = context.data_sources.get(kind)
    except (KeyError, ValueError):
        source = (
            context.data_sources.add_pandas(kind)
            if kind == "pandas"
            else context.data_sources.add_spark(kind)
        )
    asset = next((a for a in source.assets if a.name == suite_name), None) or source.add_dataframe_asset(
        suite_name
    )
    batch = next((b for b in asset.batch_definitions if b.name == "all"), None) or (
        asset.add_batch_definition_whole_dataframe("all")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=suite_name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="docs")] if docs else [],
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=RunIdentifier(run_name=run_name))
    [(result_id, validation)] = result.run_results.items()
    outcomes = [
        ExpectationOutcome(
            expectation=r.expectation_config.type,
            column=r.expectation_config.kwargs.get("column")
            or ",".join(r.expectation_config.kwargs.get("column_list", []))
            or None,
            success=bool(r.success),
            observed=_observed(r.result),
        )
        for r in validation.results
    ]
    sites = context.get_docs_sites_urls()
    url = sites[0]["site_url"] if sites else None
    return SuiteOutcome(suite_name, bool(validation.success), outcomes, url, result_id)


def update_data_docs(root: str, outcome: SuiteOutcome) -> None:
    """Render ``outcome``'s page of the Data Docs (and the index that links it)."""
    with _GX_LOCK:
        gx_context(root).build_data_docs(resource_identifiers=[outcome.result_id])


def _observed(result: dict) -> Any:
    if "observed_value" in result:
        return result["observed_value"]
    if "unexpected_count" in result:
        return {
            "unexpected_count": result["unexpected_count"],
            "sample": result.get("partial_unexpected_list", [])[:5],
        }
    return None
