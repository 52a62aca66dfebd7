"""Flag retrieved passages that read like instructions to the model (prompt injection).

A flag, not a filter: the passage is still returned (it may be the document the caller wants), marked
``injection_suspected`` with the pattern that matched, so the caller or the prompt can treat it as data.
"""

from __future__ import annotations

import functools
import re

INJECTION_PATTERNS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.IGNORECASE)
    for name, pattern in {
        "ignore previous instructions": (
            r"\b(ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+)?(previous|prior|above|earlier|"
            r"preceding)\s+(instructions|prompts?|directions|rules|messages)"
        ),
        "disregard the system prompt": (
            r"\b(ignore|disregard|forget|override|reveal|print|show)\s+(the\s+|your\s+)?"
            r"(system|developer)\s+(prompt|message|instructions)"
        ),
        "you are now": r"\byou\s+are\s+now\s+(a|an|the|in|my|DAN)\b",
        "new instructions": r"\b(new|updated)\s+instructions\s*:",
        "act as": r"\b(pretend\s+to\s+be|act\s+as\s+if\s+you|from\s+now\s+on\s+you)\b",
        "role marker": r"(^|\n)\s*(system|assistant)\s*:\s|<\|?(system|im_start)\|?>",
        "do not tell the user": r"\bdo\s+not\s+(tell|inform|mention\s+to)\s+the\s+user\b",
    }.items()
}


# The patterns as one alternation, scanned once per text (seven scans per hit took 9% of the serving
# process's GIL time under load); each pattern is a named group, so the match still says which one.
_GROUP_NAMES = {f"p{i}": name for i, name in enumerate(INJECTION_PATTERNS)}
_ANY_PATTERN = re.compile(
    "|".join(f"(?P<{group}>{INJECTION_PATTERNS[name].pattern})" for group, name in _GROUP_NAMES.items()),
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=8192)
def injection_match(text: str) -> str | None:
    """The name of an injection pattern ``text`` matches (the first in the text), or None. Cached: the
    same chunks come back for many queries."""
    found = _ANY_PATTERN.search(text)
    return _GROUP_NAMES[found.lastgroup] if found else None
