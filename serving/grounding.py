"""Grounding an answer in its sources: which passages it cites, citations to no passage removed and
flagged, and the refusal when retrieval found nothing relevant enough to answer from.

A citation is ``[n]`` or ``[n, m]`` with n the passage's number in the prompt (``render_sources``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CITATION = re.compile(r"\[\s*(\d+(?:\s*[,;]\s*\d+)*)\s*\]")
NO_ANSWER = "The sources do not contain the answer to this question."


@dataclass(frozen=True)
class Grounded:
    """An answer with its citations checked: ``text`` without citations to no passage, ``cited`` the
    passage numbers it cites (in order of first use), ``invalid`` the numbers that were removed."""

    text: str
    cited: list[int]
    invalid: list[int]

    @property
    def grounded(self) -> bool:
        return bool(self.cited)


def ground(text: str, passages: int) -> Grounded:
    """Check ``text``'s citations against ``passages`` numbered sources."""
    cited: list[int] = []
    invalid: list[int] = []

    def keep(match: re.Match) -> str:
        numbers = [int(n) for n in re.split(r"\s*[,;]\s*", match.group(1))]
        valid = [n for n in numbers if 1 <= n <= passages]
        for n in numbers:
            target = cited if n in valid else invalid
            if n not in target:
                target.append(n)
        return f"[{', '.join(map(str, valid))}]" if valid else ""

    checked = CITATION.sub(keep, text)
    if invalid:  # a removed citation leaves a space before punctuation, or two spaces
        checked = re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", checked)).strip()
    return Grounded(checked if invalid else text, cited, invalid)


def relevant(best_similarity: float | None, threshold: float) -> bool:
    """Whether the best passage is close enough to the question to answer from (cosine similarity of
    the query and passage embeddings; the threshold is calibrated on the gold set, docs/answers.md)."""
    return best_similarity is not None and best_similarity >= threshold
