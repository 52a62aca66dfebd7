"""Expectation suites, one per table and layer: what must hold before data moves downstream.

Row-level problems are quarantined by the transformations; these suites judge the batch as a whole,
so a failure means something is wrong with the data or the code, and the gate stays shut.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from assets.chunks.chunking import MODEL_SEQUENCE_LIMIT, SPECIAL_TOKENS
from assets.structured.contracts import SourceContract

MEDIA_TYPES = ["text/plain", "text/markdown", "text/html", "application/pdf"]
# What redaction must have removed from every chunk before it is embedded.
PII_PATTERNS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "us_ssn": r"\b\d{3}-\d{2}-\d{4}\b",
}
# Bronze keeps bad rows on purpose; a batch where more than this share lacks its key is a bad batch.
BRONZE_KEY_COMPLETENESS = 0.9


def bronze_documents_suite() -> list[gxe.Expectation]:
    return [
        *(gxe.ExpectColumnToExist(column=c) for c in ["document_id", "path", "sha256", "text", "is_deleted"]),
        gxe.ExpectColumnValuesToNotBeNull(column="document_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="path"),
        gxe.ExpectColumnValuesToNotBeNull(column="is_deleted"),
    ]


def silver_documents_suite() -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="document_id"),
        gxe.ExpectColumnValuesToBeUnique(column="document_id"),
        gxe.ExpectColumnValuesToBeUnique(column="path"),
        gxe.ExpectColumnValuesToBeUnique(column="sha256"),
        gxe.ExpectColumnValuesToNotBeNull(column="text"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="media_type", value_set=MEDIA_TYPES),
    ]


def document_chunks_suite() -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="chunk_id"),
        gxe.ExpectColumnValuesToBeUnique(column="chunk_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="document_id"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(
            column="token_count", min_value=1, max_value=MODEL_SEQUENCE_LIMIT - SPECIAL_TOKENS
        ),
        *(
            gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=regex)
            for regex in PII_PATTERNS.values()
        ),
    ]


def chunk_embeddings_suite(gold_chunks: int, dimension: int) -> list[gxe.Expectation]:
    """Over a frame of chunk_id, dimension, norm and has_nan computed from the LanceDB table."""
    return [
        gxe.ExpectTableRowCountToEqual(value=gold_chunks),
        gxe.ExpectColumnValuesToBeUnique(column="chunk_id"),
        gxe.ExpectColumnValuesToBeBetween(column="dimension", min_value=dimension, max_value=dimension),
        gxe.ExpectColumnValuesToBeInSet(column="has_nan", value_set=[False]),
        gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=0.999, max_value=1.001),
    ]


def embedding_frame(table) -> pd.DataFrame:
    """Per vector: chunk id, dimension, norm and NaN flag, for the embeddings suite."""
    rows = table.search().select(["chunk_id", "vector"]).limit(None).to_arrow()
    vectors = np.stack(rows["vector"].to_numpy(zero_copy_only=False)) if rows.num_rows else np.zeros((0, 0))
    return pd.DataFrame(
        {
            "chunk_id": rows["chunk_id"].to_pylist(),
            "dimension": [vectors.shape[1]] * rows.num_rows,
            "norm": np.linalg.norm(vectors, axis=1) if rows.num_rows else [],
            "has_nan": np.isnan(vectors).any(axis=1) if rows.num_rows else [],
        }
    )


def bronze_source_suite(contract: SourceContract) -> list[gxe.Expectation]:
    """Over bronze records with the primary key pulled out of the landed record."""
    return [
        gxe.ExpectColumnValuesToNotBeNull(column=contract.provenance[0]),  # the file, or the topic
        *(
            gxe.ExpectColumnValuesToNotBeNull(column=key, mostly=BRONZE_KEY_COMPLETENESS)
            for key in contract.primary_key
        ),
    ]


def silver_source_suite(
    contract: SourceContract, reference_keys: dict[str, list], now: datetime | None = None
) -> list[gxe.Expectation]:
    """Unique keys, required fields, allowed values, ranges, references and freshness, from the contract."""
    if len(contract.primary_key) == 1:
        expectations: list[gxe.Expectation] = [
            gxe.ExpectColumnValuesToBeUnique(column=contract.primary_key[0])
        ]
    else:
        expectations = [gxe.ExpectCompoundColumnsToBeUnique(column_list=contract.primary_key)]
    for column in contract.columns:
        if column.required:
            expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column.name))
        if column.allowed is not None:
            expectations.append(gxe.ExpectColumnValuesToBeInSet(column=column.name, value_set=column.allowed))
        if column.min is not None or column.max is not None:
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=column.name, min_value=column.min, max_value=column.max
                )
            )
    for ref in contract.references:
        if ref.source in reference_keys:
            expectations.append(
                gxe.ExpectColumnValuesToBeInSet(column=ref.column, value_set=reference_keys[ref.source])
            )
    if contract.freshness_days is not None and contract.event_time:
        oldest = (now or datetime.now(UTC)).replace(tzinfo=None) - timedelta(days=contract.freshness_days)
        expectations.append(gxe.ExpectColumnMaxToBeBetween(column=contract.event_time, min_value=oldest))
    return expectations
