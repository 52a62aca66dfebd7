"""Structure-aware chunking bounded by the embedding model's own tokenizer.

Chunks follow headings, paragraphs and pages; a section longer than the budget is packed into
several chunks with a token overlap. Every chunk, with its title and heading path prefixed as the
model sees it, fits the model's sequence limit. Chunk ids are stable: document id, position, content.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from assets.documents.parsing import PAGE_BREAK
from models.embedding_model import embedding_input

MODEL_SEQUENCE_LIMIT = 256  # all-MiniLM-L6-v2's max_seq_length, [CLS] and [SEP] included
SPECIAL_TOKENS = 2
MIN_BODY_TOKENS = 64
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


@functools.lru_cache(maxsize=4)
def load_tokenizer(model_path: str) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    chunk_index: int
    text: str
    heading_path: str
    page: int | None
    token_count: int
    content_hash: str


@dataclass(frozen=True)
class Block:
    headings: tuple[str, ...]
    page: int | None
    text: str


def blocks(text: str, paged: bool) -> Iterator[Block]:
    """Paragraphs with the heading path above them and their page number (for paged media)."""
    headings: list[tuple[int, str]] = []
    for page_number, page in enumerate(text.split(PAGE_BREAK), start=1):
        for raw_block in re.split(r"\n\s*\n", page):
            body: list[str] = []
            for line in raw_block.splitlines():
                match = _HEADING.match(line.strip())
                if match:
                    if body:
                        yield Block(
                            tuple(h for _, h in headings), page_number if paged else None, "\n".join(body)
                        )
                        body = []
                    level = len(match.group(1))
                    headings = [(lvl, h) for lvl, h in headings if lvl < level] + [(level, match.group(2))]
                elif line.strip():
                    body.append(line.strip())
            if body:
                yield Block(tuple(h for _, h in headings), page_number if paged else None, "\n".join(body))


def chunk_id(document_id: str, index: int, content_hash: str) -> str:
    return hashlib.sha256(f"{document_id}:{index}:{content_hash}".encode()).hexdigest()[:32]


class Chunker:
    """Packs a document's blocks into chunks of at most ``max_tokens`` model tokens."""

    def __init__(self, model_path: str, max_tokens: int = 200, overlap_tokens: int = 32):
        if overlap_tokens >= max_tokens:
            raise ValueError("overlap_tokens must be smaller than max_tokens")
        self.tokenizer = load_tokenizer(model_path)
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _budget(self, title: str, heading_path: str) -> int:
        prefix = self.count(embedding_input(title, heading_path, "")) if (title or heading_path) else 0
        room = MODEL_SEQUENCE_LIMIT - SPECIAL_TOKENS - prefix
        return max(MIN_BODY_TOKENS, min(self.max_tokens, room))

    def _windows(self, text: str, budget: int) -> Iterator[str]:
        """Split one over-long paragraph into token windows that overlap by ``overlap_tokens``."""
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        start = 0
        while start < len(offsets):
            end = min(start + budget, len(offsets))
            piece = text[offsets[start][0] : offsets[end - 1][1]]
            # A cut can re-tokenize differently (unknown characters, merges): shrink until it fits.
            while end - start > 1 and (excess := self.count(piece) - budget) > 0:
                end -= excess
                piece = text[offsets[start][0] : offsets[end - 1][1]]
            yield piece
            if end >= len(offsets):
                break
            start = max(start + 1, end - self.overlap_tokens)

    def _tail(self, text: str) -> str:
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        if len(offsets) <= self.overlap_tokens:
            return text
        return text[offsets[-self.overlap_tokens][0] :]

    def chunk(self, document_id: str, title: str, text: str, paged: bool = False) -> list[Chunk]:
        pieces: list[tuple[str, int | None, str]] = []  # (heading path, page, text)
        current: list[str] = []
        section: tuple[str, int | None] | None = None
        used = 0

        def flush() -> None:
            nonlocal current, used
            if current:
                pieces.append((section[0], section[1], "\n\n".join(current)))
            current, used = [], 0

        for block in blocks(text, paged):
            heading_path = " > ".join(h for h in block.headings if h != title)
            budget = self._budget(title, heading_path)
            if (heading_path, block.page) != section:
                flush()
                section = (heading_path, block.page)
            size = self.count(block.text)
            if size > budget:
                flush()
                pieces.extend(
                    (heading_path, block.page, window) for window in self._windows(block.text, budget)
                )
                continue
            if current and used + size > budget:
                tail = self._tail(current[-1])
                flush()
                tail_size = self.count(tail)
                if tail_size + size <= budget:
                    current, used = [tail], tail_size
            current.append(block.text)
            used += size
        flush()

        chunks = []
        for index, (heading_path, page, body) in enumerate(pieces):
            content = embedding_input(title, heading_path, body)
            digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
            chunks.append(
                Chunk(
                    chunk_id(document_id, index, digest),
                    index,
                    body,
                    heading_path,
                    page,
                    self.count(body),
                    digest,
                )
            )
        return chunks
