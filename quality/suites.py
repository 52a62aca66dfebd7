"""Expectation suites, one per guarded table: what must hold before data moves downstream."""

from __future__ import annotations

from collections.abc import Callable

import great_expectations.expectations as gxe

from assets.chunks.chunking import MODEL_SEQUENCE_LIMIT, SPECIAL_TOKENS

SuiteFactory = Callable[[], list[gxe.Expectation]]


def silver_documents_suite() -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="document_id"),
        gxe.ExpectColumnValuesToBeUnique(column="document_id"),
        gxe.ExpectColumnValuesToBeUnique(column="path"),
        gxe.ExpectColumnValuesToNotBeNull(column="text"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(
            column="media_type", value_set=["text/plain", "text/markdown", "text/html", "application/pdf"]
        ),
    ]


def document_chunks_suite() -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="chunk_id"),
        gxe.ExpectColumnValuesToBeUnique(column="chunk_id"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(
            column="token_count", min_value=1, max_value=MODEL_SEQUENCE_LIMIT - SPECIAL_TOKENS
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="document_id"),
    ]


SUITES: dict[str, SuiteFactory] = {
    "silver_documents": silver_documents_suite,
    "document_chunks": document_chunks_suite,
}
