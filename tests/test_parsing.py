"""Document parsing: each format's text, title and structure; every bad file gets a clear reason."""

from __future__ import annotations

import codecs
import io
import random

import pytest
from pypdf import PdfWriter

from assets.documents.parsing import BINARY_CONTENT, PAGE_BREAK, decode_text, parse_document
from resources.settings import SAMPLES_DIR

DOCS = SAMPLES_DIR / "documents"


def test_markdown_title_and_headings_are_kept():
    doc = parse_document("policies/return-policy.md", (DOCS / "policies/return-policy.md").read_bytes())
    assert doc.error is None
    assert doc.media_type == "text/markdown"
    assert doc.title == "Northwind Outfitters Return Policy"
    assert "\n## " in doc.text


def test_html_drops_scripts_styles_and_chrome_but_keeps_headings():
    raw = (DOCS / "faq/promo-page.html").read_bytes()
    assert b"DO-NOT-INDEX" in raw
    doc = parse_document("faq/promo-page.html", raw)
    assert doc.error is None
    assert "DO-NOT-INDEX" not in doc.text
    assert "secretTracking" not in doc.text
    assert doc.text.count("# ") >= 1


def test_html_title_from_title_tag():
    html = (
        b"<html><head><title>Store hours</title><script>x=1</script></head>"
        b"<body><h1>Hours</h1><p>9 to 5</p></body></html>"
    )
    doc = parse_document("a.html", html)
    assert doc.title == "Store hours"
    assert doc.text.splitlines()[0] == "# Hours"
    assert "9 to 5" in doc.text and "x=1" not in doc.text


def test_pdf_text_per_page_with_page_breaks():
    doc = parse_document(
        "manuals/driftline-12-kayak-manual.pdf", (DOCS / "manuals/driftline-12-kayak-manual.pdf").read_bytes()
    )
    assert doc.error is None
    assert doc.media_type == "application/pdf"
    assert doc.text.count(PAGE_BREAK) == 2  # three pages
    assert "Driftline" in doc.title


def test_bad_files_carry_a_reason():
    cases = {
        "misc/empty.txt": "empty file",
        "misc/whitespace-only.txt": "no text content",
        "manuals/corrupt-manual.pdf": "unreadable PDF",
    }
    for relative, reason in cases.items():
        doc = parse_document(relative, (DOCS / relative).read_bytes())
        assert doc.error is not None and reason in doc.error, (relative, doc.error)
        assert doc.text == ""


def test_pdf_without_text_and_unknown_type():
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = io.BytesIO()
    writer.write(buffer)
    assert "no extractable text" in parse_document("scan.pdf", buffer.getvalue()).error
    assert "unsupported file type '.docx'" in parse_document("a.docx", b"PK").error


GERMAN = "Die Kühlkette darf nicht unterbrochen werden: Größere Lieferungen über 30 kg prüft die Qualität."
FRENCH = "Les commandes expédiées à l'étranger arrivent en trois à cinq jours ; « crème brûlée » en rayon."
QUOTES = "He said \u201cthe tent\u2019s fine\u201d \u2014 rated to \u201310 \u00b0C\u2026 for \u20ac249."


def test_utf8_files_read_exactly_as_landed():
    for path in sorted(DOCS.rglob("*")):
        if path.suffix in {".md", ".txt", ".html"} and path.name not in {"latin1-notes.txt", "empty.txt"}:
            raw = path.read_bytes()
            assert decode_text(raw) == (raw.decode("utf-8-sig"), "utf-8"), path
    assert decode_text(codecs.BOM_UTF8 + "Grüße".encode()) == ("Grüße", "utf-8")
    doc = parse_document("a.md", "# Größen\n\nÄrmel “lang”".encode())
    assert (doc.title, doc.text, doc.encoding) == ("Größen", "# Größen\n\nÄrmel “lang”", "utf-8")


@pytest.mark.parametrize(
    ("path", "content", "text"),
    [
        ("notes/kuehlkette.txt", GERMAN.encode("latin-1"), GERMAN),
        ("notes/expedition.md", FRENCH.encode("latin-1"), FRENCH),
        ("notes/quotes.txt", QUOTES.encode("cp1252"), QUOTES),
        ("notes/short.txt", "Die Kühlkette für Äpfel".encode("latin-1"), "Die Kühlkette für Äpfel"),
    ],
)
def test_latin1_and_windows_1252_text_is_read_by_detection(path, content, text):
    with pytest.raises(UnicodeDecodeError):
        content.decode("utf-8")
    doc = parse_document(path, content)
    assert (doc.error, doc.text, doc.encoding) == (None, text, "cp1252")


def test_utf16_with_a_byte_order_mark_and_html_in_latin1():
    for codec, encoding in [("utf-16-le", "utf-16-le"), ("utf-16-be", "utf-16-be")]:
        doc = parse_document("a.md", ("\ufeff# Grüße\n\n" + FRENCH).encode(codec))
        assert (doc.error, doc.title, doc.encoding) == (None, "Grüße", encoding)
        assert doc.text == f"# Grüße\n\n{FRENCH}"
    html = f'<html><head><meta charset="iso-8859-1"><title>Café</title></head><body><p>{FRENCH}</p>'
    doc = parse_document("a.html", html.encode("latin-1"))
    assert (doc.error, doc.title, doc.text) == (None, "Café", FRENCH)
    assert doc.encoding == "iso8859-1"  # as the page declares; its bytes read the same in cp1252


def test_sample_latin1_notes_are_read_not_quarantined():
    doc = parse_document("misc/latin1-notes.txt", (DOCS / "misc/latin1-notes.txt").read_bytes())
    assert doc.error is None and doc.encoding == "cp1252"
    assert doc.title == "Notizen - Lieferantenbesuch München, 12. März 2024"
    assert "« crème brûlée »" in doc.text


def test_utf8_with_a_few_broken_bytes_keeps_its_text():
    content = "Grüße aus Zürich — die Kühlkette hält. ".encode() + b"\x92" + b" Ende."
    assert decode_text(content) == ("Grüße aus Zürich — die Kühlkette hält. \ufffd Ende.", "utf-8")


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(0).randbytes(2000),
        random.Random(1).randbytes(4000),
        b"report\x00\x00\x00\x01\x00\x02 totals\x00" * 50,  # valid UTF-8, but NUL-separated records
        (DOCS / "manuals/driftline-12-kayak-manual.pdf").read_bytes(),
    ],
    ids=["png", "random", "nul-bytes", "pdf"],
)
def test_binary_named_txt_is_quarantined_as_binary(content):
    doc = parse_document("misc/scan.txt", content)
    assert (doc.error, doc.text, doc.encoding) == (BINARY_CONTENT, "", None)
    assert doc.error == "binary content: not text in any known encoding"
