"""Shared helpers for the embedding benchmarks: gold-shaped Arrow tables from real or synthetic text."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from assets.chunks.chunking import Chunker
from assets.documents.parsing import parse_document
from assets.documents.transform import document_id
from models.embedding_model import embedding_input, packaged_model_path
from resources.settings import SAMPLES_DIR


def gold_table(rows: list[dict]) -> pa.Table:
    """The columns `sync_embeddings` reads from the gold `document_chunks` table."""
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("chunk_id", pa.string()),
                ("document_id", pa.string()),
                ("chunk_index", pa.int32()),
                ("path", pa.string()),
                ("title", pa.string()),
                ("heading_path", pa.string()),
                ("page", pa.int32()),
                ("text", pa.string()),
                ("access_groups", pa.list_(pa.string())),
                ("content_hash", pa.string()),
            ]
        ),
    )


def sample_chunks() -> list[dict]:
    """Chunks of the bundled sample documents, cut exactly as the pipeline cuts them."""
    chunker = Chunker(str(packaged_model_path()))
    rows = []
    for path in sorted(p for p in (SAMPLES_DIR / "documents").rglob("*") if p.is_file()):
        relative = str(path.relative_to(SAMPLES_DIR / "documents"))
        doc = parse_document(relative, path.read_bytes())
        if doc.error:
            continue
        for c in chunker.chunk(
            document_id(relative), doc.title, doc.text, paged=doc.media_type == "application/pdf"
        ):
            rows.append(
                _row(
                    c.chunk_id,
                    document_id(relative),
                    c.chunk_index,
                    relative,
                    doc.title,
                    c.heading_path,
                    c.text,
                )
            )
    return rows


def _row(chunk_id: str, doc_id: str, index: int, path: str, title: str, heading: str, text: str) -> dict:
    digest = hashlib.sha256(embedding_input(title, heading, text).encode()).hexdigest()
    return {
        "chunk_id": chunk_id,
        "document_id": doc_id,
        "chunk_index": index,
        "path": path,
        "title": title,
        "heading_path": heading,
        "page": None,
        "text": text,
        "access_groups": ["public"],
        "content_hash": digest,
    }


def synthetic_corpus(
    documents: int, chunks_per_document: int, revision: dict[int, int] | None = None
) -> list[dict]:
    """``documents`` documents of short, distinct chunks; ``revision`` maps a document to its edit number."""
    revision = revision or {}
    rows = []
    for d in range(documents):
        edit = revision.get(d, 0)
        for i in range(chunks_per_document):
            text = (
                f"Document {d} section {i}: stove model {d * 7 % 97} needs service "
                f"every {i + 3} months (rev {edit})."
            )
            digest = hashlib.sha256(text.encode()).hexdigest()
            rows.append(
                _row(
                    hashlib.sha256(f"{d}:{i}:{digest}".encode()).hexdigest()[:32],
                    f"doc{d}",
                    i,
                    f"docs/{d}.md",
                    f"Doc {d}",
                    "",
                    text,
                )
            )
    return rows
