"""PII redaction: every type replaced and counted, checksums respected, lookalikes and unicode untouched."""

from __future__ import annotations

import dataclasses
import re

import pytest

from assets.chunks.redaction import Redaction, iban_valid, luhn_valid, redact, tokenize_pii
from resources.settings import SAMPLES_DIR

KEY = b"test-key"


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        ("Write to jane.doe+orders@example.co.uk today.", "Write to [EMAIL] today.", {"EMAIL": 1}),
        ("a@b.io, C_D@mail-host.example", "[EMAIL], [EMAIL]", {"EMAIL": 2}),
        ("Mail josé.müller@exämple.de!", "Mail [EMAIL]!", {"EMAIL": 1}),
        ("Call +1-503-555-0101 now", "Call [PHONE] now", {"PHONE": 1}),
        ("London: +44 20 7946 0958.", "London: [PHONE].", {"PHONE": 1}),
        ("Phone (503) 555-0187.", "Phone [PHONE].", {"PHONE": 1}),
        ("503-555-0187 or 503.555.0187", "[PHONE] or [PHONE]", {"PHONE": 2}),
        ("Toll free 1-800-555-0142, daily", "Toll free [PHONE], daily", {"PHONE": 1}),
        ("UK 020 7946 0958 / 07700 900123", "UK [PHONE] / [PHONE]", {"PHONE": 2}),
        ("Visa 4111 1111 1111 1111 exp 12/27", "Visa [CARD] exp 12/27", {"CARD": 1}),
        ("4111-1111-1111-1111 and 5555555555554444", "[CARD] and [CARD]", {"CARD": 2}),
        ("Amex 3782 822463 10005.", "Amex [CARD].", {"CARD": 1}),
        ("IBAN DE89 3704 0044 0532 0130 00.", "IBAN [IBAN].", {"IBAN": 1}),
        ("GB82WEST12345698765432 and GB82 WEST 1234 5698 7654 32", "[IBAN] and [IBAN]", {"IBAN": 2}),
        ("SSN 123-45-6789.", "SSN [NATIONAL_ID].", {"NATIONAL_ID": 1}),
        ("NI QQ 12 34 56 C or QQ123456C", "NI [NATIONAL_ID] or [NATIONAL_ID]", {"NATIONAL_ID": 2}),
    ],
)
def test_each_type_is_replaced_and_counted(text, expected, counts):
    result = redact(text)
    assert result == Redaction(expected, counts)


def test_redaction_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        redact("a@b.io").text = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # fails Luhn
        "4111111111111112",
        "1795766348985",  # a millisecond timestamp that passes Luhn: no card network issues numbers from 1
        "0000 0000 0000 0000",
        "DE89 3704 0044 0532 0130 01",  # bad mod-97 check
        "GB83WEST12345698765432",
        "000-12-3456",  # SSN area 000
        "666-12-3456",  # area 666
        "912-34-5678",  # area 9xx
        "123-00-4567",  # group 00
        "123-45-0000",  # serial 0000
        "GB123456A",  # unallocated NI prefix
        "DF123456A",  # D and F are never used
    ],
)
def test_failing_checksums_and_invalid_ids_are_left_alone(text):
    assert redact(f"ref {text} end") == Redaction(f"ref {text} end", {})


def test_luhn_and_iban_checks():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE88 3704 0044 0532 0130 00")


@pytest.mark.parametrize(
    "text",
    [
        "Released 2024-06-18 at 10:00, back on 06/18/2024.",
        "SKU NW-TNT-002 and NW-20481736.",
        "Now $429.00 (was $1,299.99); 20,000 points.",
        "Since 1999, through 2024/2025.",
        "Order #100234 shipped.",
        "Upgrade to 2.15.0 from 1.2.3; host 192.168.100.200.",
        "Portland, OR 97209.",
        "ISBN 978-0-306-40615-7",
        "Call ext. 555-0187 inside the office.",
        "Ticket 12345678901 opened",  # bare 11 digits: no phone without separators
        "list('-+0123456789.')",
        '{"modificationTime":1795766348985}',
    ],
)
def test_non_pii_lookalikes_are_untouched(text):
    assert redact(text) == Redaction(text, {})


def test_card_and_iban_digits_are_not_eaten_by_the_phone_rule():
    # A failing IBAN's digits must not become a card or phone either.
    text = "DE89 3704 0044 0532 0130 01 / 4111 1111 1111 1112 / 4111 1111 1111 1111"
    assert redact(text) == Redaction(
        "DE89 3704 0044 0532 0130 01 / 4111 1111 1111 1112 / [CARD]", {"CARD": 1}
    )


def test_international_number_stops_before_a_following_number():
    assert redact("+44 20 7946 0958 2024").text == "[PHONE] 2024"
    assert redact("+1-503-555-0101 2024").text == "[PHONE] 2024"


def test_mixed_paragraph():
    text = (
        "Hi, I'm Yuki (yuki.sato.home@example.net). My new phone is (503) 555-0187, the old one "
        "+1-503-555-0101. Please refund card 4111-1111-1111-1111 or IBAN GB82 WEST 1234 5698 7654 32 "
        "for order #100234 ($429.00, SKU NW-TNT-002, 2024-06-18). SSN 123-45-6789, NI QQ123456C."
    )
    result = redact(text)
    assert result.text == (
        "Hi, I'm Yuki ([EMAIL]). My new phone is [PHONE], the old one "
        "[PHONE]. Please refund card [CARD] or IBAN [IBAN] "
        "for order #100234 ($429.00, SKU NW-TNT-002, 2024-06-18). SSN [NATIONAL_ID], NI [NATIONAL_ID]."
    )
    assert result.counts == {"EMAIL": 1, "PHONE": 2, "CARD": 1, "IBAN": 1, "NATIONAL_ID": 2}
    for secret in ("yuki.sato", "555-0187", "555-0101", "1111-1111", "WEST", "6789", "QQ123456C"):
        assert secret not in result.text


def test_unicode_and_emoji_are_untouched_apart_from_pii():
    text = "¡Hola! 🎉 Café Zürich — 東京 ✓ naïve: écrivez à zoë@example.fr ou appelez +33 1 23 45 67 89 🙂"
    assert redact(text) == Redaction(
        "¡Hola! 🎉 Café Zürich — 東京 ✓ naïve: écrivez à [EMAIL] ou appelez [PHONE] 🙂",
        {"EMAIL": 1, "PHONE": 1},
    )
    assert redact("日本語のテキスト 🎌 nothing here") == Redaction("日本語のテキスト 🎌 nothing here", {})


def test_no_pii_returns_text_unchanged_and_empty_counts():
    assert redact("") == Redaction("", {})
    assert redact("Plain text.\n\n# Heading\n") == Redaction("Plain text.\n\n# Heading\n", {})


def _sample_documents() -> list[tuple[str, str]]:
    found = []
    for path in sorted((SAMPLES_DIR / "documents").rglob("*")):
        if path.suffix in {".md", ".txt", ".html"}:
            try:
                found.append((str(path.relative_to(SAMPLES_DIR)), path.read_bytes().decode("utf-8")))
            except UnicodeDecodeError:
                continue
    return found


def test_sample_documents_lose_only_contact_details():
    """In the bundled documents only e-mail addresses and phone numbers are found; nothing else changes."""
    documents = _sample_documents()
    assert len(documents) > 20
    totals: dict[str, int] = {}
    for _, text in documents:
        result = redact(text)
        for kind, count in result.counts.items():
            totals[kind] = totals.get(kind, 0) + count
        pattern = "".join(
            re.escape(piece) if i % 2 == 0 else r".+?"
            for i, piece in enumerate(re.split(r"(\[EMAIL\]|\[PHONE\])", result.text))
        )
        assert re.fullmatch(pattern, text, re.DOTALL)
        assert "@northwindoutfitters.example" not in result.text
        assert "555-01" not in result.text
    assert set(totals) == {"EMAIL", "PHONE"}
    assert totals["EMAIL"] == 4


def test_tokenize_pii_is_deterministic_keyed_and_normalises_emails():
    token = tokenize_pii("a@x.com", KEY)
    assert token is not None and re.fullmatch(r"tok_[0-9a-f]{32}", token)
    assert tokenize_pii("a@x.com", KEY) == token
    assert tokenize_pii("A@x.com ", KEY) == token
    assert tokenize_pii("  A@X.COM", KEY) == token
    assert tokenize_pii("a@x.com", b"other-key") != token
    assert tokenize_pii("b@x.com", KEY) != token
    assert tokenize_pii(None, KEY) is None


def test_tokenize_pii_keeps_case_of_non_emails_and_needs_a_key():
    assert tokenize_pii("AB123", KEY) != tokenize_pii("ab123", KEY)
    assert tokenize_pii(" AB123 ", KEY) == tokenize_pii("AB123", KEY)
    with pytest.raises(ValueError):
        tokenize_pii("a@x.com", b"")
