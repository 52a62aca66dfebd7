"""Where Great Expectations keeps its suites, validation results and Data Docs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from resources.settings import Settings


class Quality(BaseModel):
    """A file-backed GX project folder (``$GROUNDWORK_HOME/gx`` by default)."""

    gx_root: str
    # Tables up to this many rows are validated as pandas (read with delta-rs), larger ones in Spark.
    pandas_max_rows: int = 200_000

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(gx_root=str(s.gx_root), pandas_max_rows=s.quality_pandas_max_rows)

    def validate(self, df: Any, suite_name: str, expectations: list, run_name: str, docs: bool = True):
        from quality.validation import validate

        return validate(df, suite_name, expectations, self.gx_root, run_name, docs)

    def update_docs(self, outcome) -> None:
        from quality.validation import update_data_docs

        update_data_docs(self.gx_root, outcome)
