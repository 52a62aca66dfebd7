"""Where Great Expectations keeps its suites, validation results and Data Docs."""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource


class QualityResource(ConfigurableResource):
    """A file-backed GX project folder (``$GROUNDWORK_HOME/gx`` by default)."""

    gx_root: str

    def validate(self, df: Any, suite_name: str, expectations: list, run_name: str):
        from quality.validation import validate

        return validate(df, suite_name, expectations, self.gx_root, run_name)
