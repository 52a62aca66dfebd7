"""Flag retrieved passages that read like instructions to the model (prompt injection).

A flag, not a filter: the passage is still returned (it may be the document the caller wants), marked
``injection_suspected`` with the pattern that matched, so the caller or the prompt can treat it as data.
"""

from __future__ import annotations

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


def injection_match(text: str) -> str | None:
    """The name of the first injection pattern ``text`` matches, or None."""
    for name, pattern in INJECTION_PATTERNS.items():
        if pattern.search(text):
            return name
    return None
