"""How assets downstream of bronze keep themselves up to date (Dagster declarative automation)."""

from dagster import AutomationCondition

# Eager: materialize when any upstream was updated, or is about to be in the same evaluation (so a
# whole chain, silver → gold → embeddings, runs together); never past an upstream whose blocking
# quality check failed. (A check requested in the same run that fails stops its downstream there.)
DOWNSTREAM_OF_BRONZE = AutomationCondition.eager() & AutomationCondition.all_deps_blocking_checks_passed()

# A quality check runs in the same run as its asset whenever automation requests the asset (runs
# started by a sensor, a schedule or a person include the checks of the assets they select).
WITH_ITS_ASSET = AutomationCondition.any_deps_match(AutomationCondition.will_be_requested()).with_label(
    "with its asset"
)
