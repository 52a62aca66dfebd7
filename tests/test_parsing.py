"""Document parsing: each format's text, title and structure; every bad file gets a clear reason."""

from __future__ import annotations

import io

from pypdf import PdfWriter

from assets.documents.parsing import PAGE_BREAK, parse_document
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
        "misc/latin1-notes.txt": "not valid UTF-8",
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
