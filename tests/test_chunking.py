"""Chunking: bounded by the model's tokenizer, following structure, with overlap and stable ids."""

from __future__ import annotations

import pytest

from assets.chunks.chunking import MODEL_SEQUENCE_LIMIT, Chunker, blocks
from assets.documents.parsing import PAGE_BREAK, parse_document
from models.embedding_model import embedding_input, packaged_model_path
from resources.settings import SAMPLES_DIR


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    return Chunker(str(packaged_model_path()), max_tokens=120, overlap_tokens=20)


def test_blocks_carry_heading_path_and_page():
    text = "# Guide\nIntro.\n\n## Setup\nStep one.\n\n### Poles\nBend gently." + PAGE_BREAK + "Page two text."
    found = list(blocks(text, paged=True))
    assert [(b.headings, b.page, b.text) for b in found] == [
        (("Guide",), 1, "Intro."),
        (("Guide", "Setup"), 1, "Step one."),
        (("Guide", "Setup", "Poles"), 1, "Bend gently."),
        (("Guide", "Setup", "Poles"), 2, "Page two text."),
    ]


def test_every_chunk_fits_the_model_with_its_context(chunker):
    doc = parse_document("m.md", (SAMPLES_DIR / "documents/manuals/ridgeline-2p-tent-manual.md").read_bytes())
    chunks = chunker.chunk("doc1", doc.title, doc.text)
    assert len(chunks) > 5
    for c in chunks:
        assert c.token_count <= 120
        with_context = chunker.count(embedding_input(doc.title, c.heading_path, c.text)) + 2
        assert with_context <= MODEL_SEQUENCE_LIMIT
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert any(c.heading_path for c in chunks)


def test_long_paragraph_is_windowed_with_overlap(chunker):
    words = [f"word{i}" for i in range(400)]
    chunks = chunker.chunk("doc2", "Long", " ".join(words))
    assert len(chunks) >= 3
    assert all(c.token_count <= 120 for c in chunks)
    first_tail = chunks[0].text.split()[-3:]
    assert all(w in chunks[1].text.split() for w in first_tail), "consecutive windows must overlap"
    assert chunks[0].text.split()[0] == "word0" and chunks[-1].text.split()[-1] == "word399"


def test_ids_are_stable_and_change_with_content(chunker):
    text = "# T\n\nFirst paragraph about tents.\n\nSecond paragraph about stoves."
    a = chunker.chunk("doc3", "T", text)
    b = chunker.chunk("doc3", "T", text)
    assert [c.chunk_id for c in a] == [c.chunk_id for c in b]
    assert len(a) == 1
    changed = chunker.chunk("doc3", "T", text.replace("stoves", "lanterns"))
    assert changed[0].chunk_id != a[0].chunk_id
    assert chunker.chunk("other-doc", "T", text)[0].chunk_id != a[0].chunk_id


def test_multilingual_and_emoji_text_chunks(chunker):
    text = "Größentabelle für Wanderschuhe 🥾. Размер обуви. 登山靴のサイズ表。 " * 40
    chunks = chunker.chunk("doc4", "Sizes", text)
    assert chunks and all(c.token_count <= 120 for c in chunks)
    assert "🥾" in chunks[0].text


def test_empty_text_gives_no_chunks(chunker):
    assert chunker.chunk("doc5", "Empty", "") == []


def test_a_five_megabyte_paragraph_is_windowed_without_losing_its_ends(chunker):
    text = "start " + ("Trail runners replace shoes every 500 km and check the lugs. " * 82_000) + " finish"
    assert len(text) > 5_000_000 and "\n" not in text
    chunks = chunker.chunk("big", "Big", text)
    assert len(chunks) > 1_000
    assert max(c.token_count for c in chunks) <= 120
    assert chunks[0].text.startswith("start") and chunks[-1].text.endswith("finish")
    assert len({c.chunk_id for c in chunks}) == len(chunks)
