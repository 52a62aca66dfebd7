"""Turn a landed document's bytes into clean text with its title and heading structure.

Headings come out as Markdown ``#`` lines and PDF pages are separated by form feeds (``\\f``), so
chunking can follow the document's structure whatever format it arrived in. Text files in any
encoding are read (UTF-8 first, byte for byte as landed; others detected); only binary content is refused.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import re
from collections.abc import Iterator
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
    encoding: str | None = None  # what a text file was read as (``utf-8``, ``cp1252`` ...); None for PDFs


class ParseError(ValueError):
    """A document that cannot be read; its message becomes the quarantine reason."""


def media_type_for(path: str) -> str | None:
    return MEDIA_TYPES.get(PurePosixPath(path).suffix.lower())


def title_from_path(path: str) -> str:
    stem = PurePosixPath(path).stem
    return re.sub(r"[-_]+", " ", stem).strip().capitalize() or stem


BINARY_CONTENT = "binary content: not text in any known encoding"
# Byte-order marks that name their encoding; UTF-32's first, as FF FE 00 00 also begins with UTF-16's.
_UNICODE_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]
# Control characters text does not carry: all C0 and C1 but tab, line and page breaks, and ESC (colours).
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_MAX_CONTROL_SHARE = 0.10
_NON_ASCII = re.compile(r"[^\x00-\x7f\ufffd]")


def decode_text(content: bytes) -> tuple[str, str]:
    """The text of a text file and the encoding it was read as; ParseError when it is binary.

    Readings are tried most certain first and the first that looks like text wins: strict UTF-8 (a
    byte-order mark dropped, so UTF-8 files read exactly as landed), a UTF-16/32 byte-order mark, UTF-8
    with a few broken bytes replaced, then charset-normalizer's detection.
    """
    for text, encoding in _readings(content):
        if _looks_like_text(text):
            return text, encoding
    raise ParseError(BINARY_CONTENT)


def _readings(content: bytes) -> Iterator[tuple[str, str]]:
    with contextlib.suppress(UnicodeDecodeError):
        yield content.decode("utf-8-sig"), "utf-8"
    for bom, encoding in _UNICODE_BOMS:
        if content.startswith(bom):
            with contextlib.suppress(UnicodeDecodeError):
                yield content[len(bom) :].decode(encoding), encoding
            break
    # More well-formed multi-byte sequences than broken bytes: UTF-8 damaged in places (or mixed with a
    # stray Windows quote). Detection would read the whole file as mojibake ("GrÃ¼ÃŸe"); U+FFFD is better.
    lenient = content.decode("utf-8-sig", "replace")
    broken = lenient.count("\ufffd")
    if 0 < broken < len(_NON_ASCII.findall(lenient)):
        yield lenient, "utf-8"
    detected = _detect(content)
    if detected:
        yield detected


def _detect(content: bytes) -> tuple[str, str] | None:
    """charset-normalizer's reading: the encoding whose text is least chaotic, within its threshold.

    Single-byte Latin code pages often tie (a short German or French text reads the same, or equally
    cleanly, in cp1250, cp1252 and cp1257); among the tied, Windows-1252 wins, as it does for browsers
    (the WHATWG default for undeclared Western text, and ISO-8859-1's superset).
    """
    from charset_normalizer import from_bytes

    matches = from_bytes(content, enable_fallback=False)
    best = matches.best()
    if best is None:
        return None
    tied = [m for m in matches if m.chaos <= best.chaos]
    western = next((m for m in tied if "cp1252" in m.could_be_from_charset), None)
    if western is not None:  # could_be_from_charset: the encodings that give exactly this text
        return str(western), "cp1252"
    return str(best), codecs.lookup(best.encoding).name


def _looks_like_text(text: str) -> bool:
    """No NUL characters and few control characters: what text in the right encoding looks like."""
    return "\x00" not in text and len(_CONTROL.findall(text)) <= _MAX_CONTROL_SHARE * len(text)


def normalize_whitespace(text: str) -> str:
    """Collapse runs of spaces, keep paragraph breaks and page breaks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    text = re.sub(r"[ \t\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def parse_markdown(text: str, path: str) -> tuple[str, str]:
    match = re.search(r"^#\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE)
    return (match.group(1).strip() if match else title_from_path(path)), text


def parse_text(text: str, path: str) -> tuple[str, str]:
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    title = first_line if 0 < len(first_line) <= 120 else title_from_path(path)
    return title, text


def parse_html(text: str, path: str) -> tuple[str, str]:
    """Drop scripts, styles and page chrome; keep headings as Markdown so the structure survives."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
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


_TEXT_PARSERS = {"text/plain": parse_text, "text/markdown": parse_markdown, "text/html": parse_html}


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
    encoding = None
    try:
        if media_type == "application/pdf":
            title, text = parse_pdf(content, path)
        else:
            decoded, encoding = decode_text(content)
            title, text = _TEXT_PARSERS[media_type](decoded, path)
    except ParseError as exc:
        return ParsedDocument(title_from_path(path), "", media_type, str(exc))
    text = "\f".join(normalize_whitespace(page) for page in text.split(PAGE_BREAK))
    if not text.replace(PAGE_BREAK, "").strip():
        return ParsedDocument(title, "", media_type, "no text content (only whitespace or markup)", encoding)
    return ParsedDocument(normalize_whitespace(title), text, media_type, encoding=encoding)
