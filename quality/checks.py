"""Blocking Dagster asset checks that run the suites: a failure stops everything downstream."""

from dagster import AssetCheckResult, AssetChecksDefinition, AssetCheckSeverity, asset_check

from quality.suites import SUITES
from quality.validation import validate
from resources import LakehouseResource, SparkResource


def suite_check(table: str) -> AssetChecksDefinition:
    @asset_check(
        asset=table,
        name=f"{table}_expectations",
        blocking=True,
        description=f"Great Expectations suite for {table}; blocks downstream assets when it fails.",
    )
    def check(spark: SparkResource, lakehouse: LakehouseResource) -> AssetCheckResult:
        outcome = validate(lakehouse.read(spark.session(), table), table, SUITES[table]())
        return AssetCheckResult(
            passed=outcome.success,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "expectations": len(outcome.outcomes),
                "failed": [f"{o.expectation}({o.column}): {o.observed}" for o in outcome.failed],
                "delta_version": lakehouse.version(table),
            },
        )

    return check


quality_checks = [suite_check(table) for table in SUITES]
