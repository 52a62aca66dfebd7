"""Where the retrieval gold set lives and how a candidate embedding model is judged against it."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource


class EvaluationResource(ConfigurableResource):
    """A gold file of ``{"query", "relevant": [paths relative to the landing folder]}`` lines.

    ``promotion_mode`` is the search mode whose nDCG@10 gates promotion; a candidate replaces the
    champion only if its score is at least the champion's minus ``promotion_tolerance``.
    """

    gold_file: str
    k: int = 5
    promotion_mode: str = "vector"
    promotion_tolerance: float = 0.0

    @property
    def gold_path(self) -> Path:
        return Path(self.gold_file).expanduser()
