"""Turn a landed document's bytes into clean text with its title and heading structure.

Headings come out as Markdown ``#`` lines and PDF pages are separated by form feeds (``\\f``), so
chunking can follow the document's structure whatever format it arrived in.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

PAGE_BREAK = "\f"
MEDIA_TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}
_DROP_HTML_TAGS = ["script", "style", "noscript", "nav", "footer", "header", "aside", "form", "iframe", "svg"]


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    text: str
    media_type: str
    error: str | None = None


class ParseError(ValueError):
    """A document that cannot be read; its message becomes the quarantine reason."""


def media_type_for(path: str) -> str | None:
    return MEDIA_TYPES.get(PurePosixPath(path).suffix.lower())


def title_from_path(path: str) -> str:
    stem = PurePosixPath(path).stem
    return re.sub(r"[-_]+", " ", stem).strip().capitalize() or stem


def decode_utf8(content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not valid UTF-8: byte 0x{content[exc.start]:02x} at offset {exc.start}") from None


def normalize_whitespace(text: str) -> str:
    """Collapse runs of spaces, keep paragraph breaks and page breaks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    text = re.sub(r"[ \t\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def parse_markdown(content: bytes, path: str) -> tuple[str, str]:
    text = decode_utf8(content)
    match = re.search(r"^#\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE)
    return (match.group(1).strip() if match else title_from_path(path)), text


def parse_text(content: bytes, path: str) -> tuple[str, str]:
    text = decode_utf8(content)
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    title = first_line if 0 < len(first_line) <= 120 else title_from_path(path)
    return title, text


def parse_html(content: bytes, path: str) -> tuple[str, str]:
    """Drop scripts, styles and page chrome; keep headings as Markdown so the structure survives."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_utf8(content), "html.parser")
    title_tag = soup.find("title")
    for tag in soup.find_all(_DROP_HTML_TAGS):
        tag.decompose()
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading.replace_with(f"\n\n{'#' * level} {heading.get_text(' ', strip=True)}\n\n")
    for block in soup.find_all(["p", "li", "tr", "div", "br", "section", "article", "pre", "blockquote"]):
        block.insert_after("\n\n" if block.name != "li" else "\n")
    body = soup.body or soup
    text = body.get_text("")
    h1 = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    if title_tag and title_tag.get_text(strip=True):
        title = title_tag.get_text(" ", strip=True)
    elif h1:
        title = h1.group(1).strip()
    else:
        title = title_from_path(path)
    return title, text


def parse_pdf(content: bytes, path: str) -> tuple[str, str]:
    """Text per page, pages joined by form feeds so page numbers can be recovered."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise ParseError(f"unreadable PDF: {type(exc).__name__}: {exc}"[:300]) from None
    if not any(p.strip() for p in pages):
        raise ParseError(f"PDF has no extractable text ({len(pages)} pages)")
    metadata_title = (reader.metadata.title if reader.metadata else None) or ""
    first_line = next((line.strip() for line in pages[0].splitlines() if line.strip()), "")
    title = metadata_title.strip() or first_line[:120] or title_from_path(path)
    return title, PAGE_BREAK.join(pages)


_PARSERS = {
    "text/plain": parse_text,
    "text/markdown": parse_markdown,
    "text/html": parse_html,
    "application/pdf": parse_pdf,
}


def parse_document(path: str, content: bytes) -> ParsedDocument:
    """Parse one file; never raises: a failure is returned in ``error`` for the quarantine."""
    media_type = media_type_for(path)
    if media_type is None:
        return ParsedDocument(
            title_from_path(path),
            "",
            "application/octet-stream",
            f"unsupported file type {PurePosixPath(path).suffix or '(none)'!r}",
        )
    if not content:
        return ParsedDocument(title_from_path(path), "", media_type, "empty file (0 bytes)")
    try:
        title, text = _PARSERS[media_type](content, path)
    except ParseError as exc:
        return ParsedDocument(title_from_path(path), "", media_type, str(exc))
    text = "\f".join(normalize_whitespace(page) for page in text.split(PAGE_BREAK))
    if not text.replace(PAGE_BREAK, "").strip():
        return ParsedDocument(title, "", media_type, "no text content (only whitespace or markup)")
    return ParsedDocument(normalize_whitespace(title), text, media_type)
