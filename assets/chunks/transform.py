"""Silver documents to gold chunks as a plain Spark transformation (no Dagster).

The chunker runs inside Spark's Python workers, which import this module: it stays free of Dagster and
of the asset modules, so a worker starts in a fraction of a second instead of importing the whole
orchestration layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from assets.chunks.chunking import Chunker
from assets.chunks.redaction import redact

CHUNK_SCHEMA = T.StructType(
    [
        T.StructField("chunk_id", T.StringType(), False),
        T.StructField("document_id", T.StringType(), False),
        T.StructField("chunk_index", T.IntegerType(), False),
        T.StructField("path", T.StringType(), False),
        T.StructField("title", T.StringType(), True),
        T.StructField("media_type", T.StringType(), True),
        T.StructField("heading_path", T.StringType(), True),
        T.StructField("page", T.IntegerType(), True),
        T.StructField("text", T.StringType(), False),
        T.StructField("token_count", T.IntegerType(), False),
        T.StructField("content_hash", T.StringType(), False),
        T.StructField("access_groups", T.ArrayType(T.StringType()), True),
        T.StructField("source_sha256", T.StringType(), True),
        T.StructField("document_pii", T.MapType(T.StringType(), T.IntegerType()), True),
    ]
)


def index_hash(content_hash: str, groups) -> str:
    """What the index must match for a chunk: its content and who may read it (so an access change is
    re-indexed even when the text is the same)."""
    return hashlib.sha256(f"{content_hash}|{','.join(sorted(groups))}".encode()).hexdigest()[:32]


def chunk_rows(documents: pd.DataFrame, chunker: Chunker) -> pd.DataFrame:
    """Silver documents (``document_id``, ``path``, ``title``, ``media_type``, ``text``, ``access_groups``,
    ``sha256``) → one row per chunk, in ``CHUNK_SCHEMA``'s columns.

    PII is redacted from the whole document before chunking, so token bounds hold for what is embedded
    and original PII never reaches the gold table or the index; ``document_pii`` counts what was replaced.
    """
    rows = []
    for doc in documents.itertuples(index=False):
        paged = doc.media_type == "application/pdf"
        text, title = redact(doc.text), redact(doc.title or "")
        pii = {
            k: text.counts.get(k, 0) + title.counts.get(k, 0) for k in sorted({*text.counts, *title.counts})
        }
        for c in chunker.chunk(doc.document_id, title.text, text.text, paged=paged):
            rows.append(
                {
                    "chunk_id": c.chunk_id,
                    "document_id": doc.document_id,
                    "chunk_index": c.chunk_index,
                    "path": doc.path,
                    "title": title.text,
                    "media_type": doc.media_type,
                    "heading_path": c.heading_path,
                    "page": c.page,
                    "text": c.text,
                    "token_count": c.token_count,
                    "content_hash": index_hash(c.content_hash, doc.access_groups),
                    "access_groups": list(doc.access_groups),
                    "source_sha256": doc.sha256,
                    "document_pii": pii,
                }
            )
    return pd.DataFrame(rows, columns=CHUNK_SCHEMA.fieldNames()).astype({"page": "Int32"})


def chunk_documents(documents: DataFrame, model_path: str, max_tokens: int, overlap_tokens: int) -> DataFrame:
    """Silver documents → one row per chunk (``chunk_rows`` inside Spark's Python workers)."""

    def chunk_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        chunker = Chunker(model_path, max_tokens, overlap_tokens)
        for batch in batches:
            yield chunk_rows(batch, chunker)

    columns = ["document_id", "path", "title", "media_type", "text", "access_groups", "sha256"]
    return documents.select(*columns).mapInPandas(chunk_batches, CHUNK_SCHEMA)
