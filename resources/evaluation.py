"""Where the retrieval gold set lives and how a candidate embedding model is judged against it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from resources.settings import Settings


class Evaluation(BaseModel):
    """A gold file of ``{"query", "relevant": [paths relative to the landing folder]}`` lines.

    ``promotion_mode`` is the search mode whose nDCG@10 gates promotion; a candidate replaces the
    champion only if its score is at least the champion's minus ``promotion_tolerance``.
    """

    gold_file: str
    k: int = 5
    promotion_mode: str = "vector"
    promotion_tolerance: float = 0.0

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(
            gold_file=str(s.eval_gold_file),
            k=s.eval_k,
            promotion_mode=s.promotion_eval_mode,
            promotion_tolerance=s.promotion_tolerance,
        )

    @property
    def gold_path(self) -> Path:
        return Path(self.gold_file).expanduser()
