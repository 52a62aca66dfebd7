"""Run an expectation suite over a Spark DataFrame with Great Expectations 1.x."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from pyspark.sql import DataFrame

logging.getLogger("great_expectations").setLevel(logging.WARNING)


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    observed: Any


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    success: bool
    outcomes: list[ExpectationOutcome]

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]


@functools.lru_cache(maxsize=1)
def _context():
    return gx.get_context(mode="ephemeral")


def validate(df: DataFrame, suite_name: str, expectations: list[gxe.Expectation]) -> SuiteOutcome:
    """Validate ``df`` against ``expectations``; the suite is rebuilt from code on every call."""
    context = _context()
    for name in [n.name for n in context.validation_definitions.all() if n.name == suite_name]:
        context.validation_definitions.delete(name)
    if suite_name in [s.name for s in context.suites.all()]:
        context.suites.delete(suite_name)
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    try:
        source = context.data_sources.get("spark")
    except (KeyError, ValueError):
        source = context.data_sources.add_spark("spark")
    asset = next((a for a in source.assets if a.name == suite_name), None) or source.add_dataframe_asset(
        suite_name
    )
    batch = next((b for b in asset.batch_definitions if b.name == "all"), None) or (
        asset.add_batch_definition_whole_dataframe("all")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
    )
    result = definition.run(batch_parameters={"dataframe": df})
    outcomes = [
        ExpectationOutcome(
            expectation=r.expectation_config.type,
            column=r.expectation_config.kwargs.get("column"),
            success=bool(r.success),
            observed=_observed(r.result),
        )
        for r in result.results
    ]
    return SuiteOutcome(suite_name, bool(result.success), outcomes)


def _observed(result: dict) -> Any:
    if "observed_value" in result:
        return result["observed_value"]
    if "unexpected_count" in result:
        return {
            "unexpected_count": result["unexpected_count"],
            "sample": result.get("partial_unexpected_list", [])[:5],
        }
    return None
