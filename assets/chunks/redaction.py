"""PII redaction for document text and tokenisation for PII columns of structured sources.

Chunks are embedded into the vector index, returned verbatim by search and often logged, so personal
data must be removed before chunking: `redact` replaces e-mail addresses, phone numbers, payment card
numbers, IBANs and national ID numbers with typed placeholders. Checksummed types (cards: Luhn, IBANs:
ISO 13616 mod 97) are replaced only when the checksum passes, which keeps order numbers and the like.
`tokenize_pii` turns a PII value into a stable keyed token, so structured rows can still be joined on
it without the value itself ever being stored downstream.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field

EMAIL = "EMAIL"
PHONE = "PHONE"
CARD = "CARD"
IBAN = "IBAN"
NATIONAL_ID = "NATIONAL_ID"
PII_TYPES = (EMAIL, PHONE, CARD, IBAN, NATIONAL_ID)


@dataclass(frozen=True)
class Redaction:
    text: str
    counts: dict[str, int] = field(default_factory=dict)


# Unicode-aware (RFC 6531 local parts, internationalised domain names): zoë@exämple.de is an address too.
_EMAIL = re.compile(
    r"(?<![\w.+%-])[\w%+-](?:[\w.%+-]*[\w%+-])?"
    r"@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*\.[^\W\d_]{2,}\b"
)

# Country code, check digits, then 11 to 30 alphanumerics, in groups of four when spaced.
_IBAN = re.compile(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")

# Contiguous 13-19 digits, or the printed groupings (4-4-4-1..4[-3], Amex 4-6-5) with one consistent
# separator, so that two phone numbers side by side never read as one card.
_CARD = re.compile(
    r"(?<![\w.,/#$-])"
    r"(?:[0-9]{13,19}"
    r"|[0-9]{4}(?P<s>[ -])[0-9]{4}(?P=s)[0-9]{4}(?P=s)[0-9]{1,4}(?:(?P=s)[0-9]{3})?"
    r"|[0-9]{4}(?P<a>[ -])[0-9]{6}(?P=a)[0-9]{4,5})"
    r"(?![\w-]|[.,][0-9])"
)

# US SSN: area not 000, 666 or 9xx; group not 00; serial not 0000.
_SSN = re.compile(r"(?<![\w.,/#$-])(?!000|666|9)[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![\w-]|[.,][0-9])")

# UK National Insurance number. D, F, I, U, V are never used and O not second; BG, GB, KN, NK, NT, TN, ZZ
# are unallocated. Q is kept because HMRC's specimen "QQ 12 34 56 C" turns up in pasted test data.
_NINO = re.compile(
    r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-TW-Z][A-CEGHJ-NP-TW-Z]"
    r" ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b"
)

_PHONE = re.compile(
    r"""
    (?:
    (?<![\w+-]) \+1 [ .-]?                                  # +1 (North American plan): exactly ten digits
        (?: \([2-9][0-9]{2}\)\ ? | [2-9][0-9]{2}[ .-]? ) [2-9][0-9]{2} [ .-]? [0-9]{4}
    | (?<![\w+-]) \+[2-9][0-9]{0,2}                        # other +CC: digit groups, optional (0) or (area)
        (?: [ .-]? (?: \([0-9]{1,4}\) | [0-9]{1,5} ) ){1,6}
    | (?<![\w.,/\#$@+-]) (?:1[ .-]?)?                         # (503) 555-0187, 1 (800) 555-0142
        \([2-9][0-9]{2}\)\ ? [2-9][0-9]{2} [.-] [0-9]{4}
    | (?<![\w.,/\#$@+-]) (?:1(?P<n>[.-]))?                    # 503-555-0187, 503.555.0187, 1-800-555-0142
        [2-9][0-9]{2} (?(n)(?P=n)|(?P<m>[.-])) [2-9][0-9]{2} (?(n)(?P=n)|(?P=m)) [0-9]{4}
    | (?<![\w.,/\#$@+-])                                      # trunk-prefixed: 020 7946 0958, 07700 900123
        0[0-9]{2,4} [ -] [0-9]{3,4} [ -]? [0-9]{3,4}
    )
    (?! [\w-] | [.,:/][0-9] )
    """,
    re.VERBOSE,
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    iban = candidate.replace(" ", "")
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _card(candidate: str) -> int:
    digits = _digits(candidate)
    # Card networks issue numbers starting 2-6 (Mir, Mastercard, Amex/Diners/JCB, Visa, Discover/UnionPay):
    # this keeps 13-digit millisecond timestamps (1...) that happen to pass Luhn.
    valid = 13 <= len(digits) <= 19 and digits[0] in "23456" and len(set(digits)) > 1 and luhn_valid(digits)
    return len(candidate) if valid else 0


def _iban(candidate: str) -> int:
    return len(candidate) if iban_valid(candidate) else 0


def _phone(candidate: str) -> int:
    """Length of the phone number at the start of `candidate`: an international one that ran on into a
    following number (more than E.164's 15 digits) loses trailing groups until it fits."""
    while True:
        digits = len(_digits(candidate))
        if candidate.startswith("+"):
            if 8 <= digits <= 15:
                return len(candidate)
            cut = max(candidate.rfind(" "), candidate.rfind("-"), candidate.rfind("."))
            if digits < 8 or cut < 0:
                return 0
            candidate = candidate[:cut]
        else:
            return len(candidate) if 10 <= digits <= 11 else 0


def _always(candidate: str) -> int:
    return len(candidate)


# Order matters: e-mails, IBANs and cards go first so phone and ID rules never half-eat their digits.
_RULES: tuple[tuple[str, re.Pattern[str], Callable[[str], int]], ...] = (
    (EMAIL, _EMAIL, _always),
    (IBAN, _IBAN, _iban),
    (CARD, _CARD, _card),
    (NATIONAL_ID, _SSN, _always),
    (NATIONAL_ID, _NINO, _always),
    (PHONE, _PHONE, _phone),
)
_CLAIMED = "\x00"  # stands in for text a rule has matched, so later rules neither match it nor across it


def redact(text: str) -> Redaction:
    """Replace PII in `text` with `[TYPE]` placeholders; counts say how many of each type were replaced.

    A candidate whose checksum fails (a card number failing Luhn, an IBAN failing mod 97) is left as it is,
    and its span is still claimed, so that no later rule redacts part of it.
    """
    masked = text
    found: list[tuple[int, int, str]] = []
    for kind, pattern, accept in _RULES:
        spans: list[tuple[int, int]] = []
        for match in pattern.finditer(masked):
            spans.append(match.span())
            length = accept(match.group())
            if length:
                found.append((match.start(), match.start() + length, kind))
        if spans:
            pieces, position = [], 0
            for start, end in spans:
                pieces += [masked[position:start], _CLAIMED * (end - start)]
                position = end
            masked = "".join([*pieces, masked[position:]])
    if not found:
        return Redaction(text, {})
    found.sort()
    pieces = []
    counts: dict[str, int] = {}
    position = 0
    for start, end, kind in found:
        pieces.append(text[position:start])
        pieces.append(f"[{kind}]")
        counts[kind] = counts.get(kind, 0) + 1
        position = end
    pieces.append(text[position:])
    return Redaction("".join(pieces), {kind: counts[kind] for kind in PII_TYPES if kind in counts})


_EMAIL_ONLY = re.compile(r"\s*[^@\s]+@[^@\s]+\s*")


def tokenize_pii(value: str | None, key: bytes) -> str | None:
    """A stable keyed token for a PII value: `tok_` and the first 32 hex digits of HMAC-SHA256.

    The same value and key always give the same token, so tokenised columns still join; without the key
    the value cannot be recovered or confirmed by hashing guesses. Values are stripped, and e-mail
    addresses lower-cased, before hashing.
    """
    if value is None:
        return None
    if not isinstance(key, bytes | bytearray) or not key:
        raise ValueError("tokenize_pii needs a non-empty bytes key")
    normalised = value.strip()
    if _EMAIL_ONLY.fullmatch(normalised):
        normalised = normalised.lower()
    digest = hmac.new(bytes(key), normalised.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"tok_{digest[:32]}"
