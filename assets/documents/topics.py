"""Document events on a Kafka topic → ``bronze_documents`` records, the topic counterpart of landed files.

A CMS publishes one message per change, keyed by the document's id:

- an upsert: a JSON object ``{"id", "title", "text", "media_type", "access_groups"}`` (``title`` and
  ``access_groups`` optional; ``media_type`` one of the text types a landed file may have);
- a delete: a tombstone (the id as key, a null value), as for record topics.

Each message becomes one bronze record in the shape of a landed file's, so silver documents, chunks and
the index treat it as a landed document: its ``path`` is ``kafka:<topic>/<id>`` (stable per document, as a
file's path is), its text goes through the same parser as a file of its media type, and it keeps its
provenance in ``_topic``, ``_partition`` and ``_offset``. A message that cannot be a document (invalid
JSON, no id or text, an unknown media type, over 1 MB) is a record with its reason in ``parse_error``,
for the quarantine, never dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from assets.documents.parsing import MEDIA_TYPES, parse_document
from assets.documents.transform import BRONZE_DOCUMENTS_SCHEMA, document_id
from assets.landing import PUBLIC_GROUPS
from assets.structured.topics import kafka_messages
from assets.structured.transform import MAX_RECORD_BYTES, RAW_LIMIT, _too_long

# Media types a document event may carry: its text is text (a PDF's bytes do not travel in JSON).
EVENT_MEDIA_TYPES = {t: ext for ext, t in reversed(MEDIA_TYPES.items()) if t.startswith("text/")}
# Bronze's provenance columns of a document from a topic (null for landed files).
TOPIC_PROVENANCE = [
    T.StructField("_topic", T.StringType(), True),
    T.StructField("_partition", T.IntegerType(), True),
    T.StructField("_offset", T.LongType(), True),
]
BRONZE_EVENT_SCHEMA = T.StructType([*BRONZE_DOCUMENTS_SCHEMA.fields, *TOPIC_PROVENANCE])


def event_path(topic: str, doc_id: str) -> str:
    """Where a topic's document "lives": one path per id, so its later events replace or delete it."""
    return f"kafka:{topic}/{doc_id}"


def parse_document_event(
    topic: str, partition: int, offset: int, timestamp, key: bytes | None, value: bytes | None
) -> dict:
    """One message as a bronze documents record (a landed file's columns and its topic provenance)."""
    row = dict.fromkeys(BRONZE_DOCUMENTS_SCHEMA.fieldNames())
    row |= {"_topic": topic, "_partition": partition, "_offset": offset, "modified_at": timestamp}
    row |= {"is_deleted": False, "size_bytes": 0 if value is None else len(value)}

    def unreadable(reason: str, doc_id: str | None = None) -> dict:
        # Without an id, the message is its own "document" (its offset): quarantined, it deletes nothing.
        path = event_path(topic, doc_id) if doc_id else f"kafka:{topic}/{partition}@{offset}"
        raw = None if value is None else value[:RAW_LIMIT].decode("utf-8", "replace")
        return row | {"document_id": document_id(path), "path": path, "text": raw, "parse_error": reason}

    try:
        key_text = None if key is None else key.decode("utf-8")
    except UnicodeDecodeError:
        return unreadable("message key is not valid UTF-8")
    if value is None:
        if not key_text:
            return unreadable("a tombstone without a key deletes nothing (the key is the document id)")
        path = event_path(topic, key_text)
        return row | {"document_id": document_id(path), "path": path, "is_deleted": True}
    if len(value) > MAX_RECORD_BYTES:
        return unreadable(_too_long(len(value)).replace("record", "document event"), key_text)
    try:
        event = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError:
        return unreadable("message value is not valid UTF-8", key_text)
    except json.JSONDecodeError as exc:
        return unreadable(f"invalid JSON: {exc.msg} at column {exc.colno}", key_text)
    if not isinstance(event, dict):
        return unreadable(f"document event is a JSON {type(event).__name__}, not an object", key_text)
    doc_id = event.get("id")
    if not isinstance(doc_id, str) or not doc_id:
        return unreadable("document event has no id (a non-empty string)", key_text)
    if key_text is not None and key_text != doc_id:
        return unreadable(f"message key {key_text!r} is not the event's id {doc_id!r}", key_text)
    text, media_type = event.get("text"), event.get("media_type", "text/plain")
    if not isinstance(text, str):
        return unreadable("document event has no text (a string)", doc_id)
    if media_type not in EVENT_MEDIA_TYPES:
        return unreadable(f"unknown media type {media_type!r} (allowed: {sorted(EVENT_MEDIA_TYPES)})", doc_id)
    groups = event.get("access_groups", list(PUBLIC_GROUPS))
    if not isinstance(groups, list) or not groups or not all(isinstance(g, str) and g for g in groups):
        return unreadable("access_groups is not a non-empty list of group names", doc_id)
    title = event.get("title")
    if title is not None and not isinstance(title, str):
        return unreadable("title is not a string", doc_id)
    path = event_path(topic, doc_id)
    # The same parser as a landed file of this media type (HTML cleaned, headings kept as Markdown).
    parsed = parse_document(f"{doc_id}{EVENT_MEDIA_TYPES[media_type]}", text.encode("utf-8"))
    content = json.dumps([title, media_type, text], ensure_ascii=False).encode("utf-8")
    return row | {
        "document_id": document_id(path),
        "path": path,
        "media_type": media_type,
        "encoding": "utf-8",
        "sha256": hashlib.sha256(content).hexdigest(),
        "title": title or parsed.title,
        "text": parsed.text if parsed.error is None else text[:RAW_LIMIT],
        "parse_error": parsed.error,
        "access_groups": groups,
    }


def _parse_events(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        rows = [parse_document_event(*message) for message in kafka_messages(batch)]
        yield pd.DataFrame(rows, columns=BRONZE_EVENT_SCHEMA.fieldNames())


def document_event_records(messages: DataFrame, run_id: str) -> DataFrame:
    """Spark's Kafka rows → bronze documents records, stamped like landed files' (``ingested_at``, run)."""
    columns = messages.select("topic", "partition", "offset", "timestamp", "key", "value")
    records = columns.mapInPandas(_parse_events, BRONZE_EVENT_SCHEMA)
    return records.withColumns({"ingested_at": F.current_timestamp(), "run_id": F.lit(run_id)})
