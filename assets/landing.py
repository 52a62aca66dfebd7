"""The landing zone: pick up what has landed, list it, and read a file's bytes (in Spark workers).

New files are picked up by Spark Structured Streaming (``trigger(availableNow=True)``) with a checkpoint
per table: each landed path is handed to the ingestion exactly once, even across a killed run (the
checkpoint replays an unfinished batch and the batch's Delta write is idempotent).

Spark's file source cannot see two things, so a listing through Arrow's filesystem layer (a local
folder and object storage look alike) reconciles after each stream: empty files (Spark skips
zero-byte files, and an empty file must still be accounted for) and files rewritten in place under a
path already seen. Deletions are seen the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC

import pandas as pd
import pyarrow.fs as pafs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from resources.lakehouse import Lakehouse
from resources.settings import Settings

LANDED_SCHEMA = T.StructType(
    [
        T.StructField("uri", T.StringType(), False),
        T.StructField("path", T.StringType(), False),
        T.StructField("size_bytes", T.LongType(), False),
        T.StructField("modified_at", T.TimestampType(), False),
    ]
)


def filesystem(root: str, storage_options: Mapping[str, str] | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``root`` and the path in it. ``storage_options`` are the Lakehouse's
    (``Settings.object_store_options()``: region and endpoint, never keys; credentials come from AWS's
    standard chain). Spark's Python workers get them inside the parsing function, like any closure value.
    """
    if "://" not in root:
        return pafs.LocalFileSystem(), root
    if root.startswith(("s3://", "s3a://")):
        options = storage_options or {}
        endpoint = options.get("aws_endpoint", "")
        fs = pafs.S3FileSystem(
            region=options.get("aws_region") or None,
            endpoint_override=endpoint.split("://", 1)[-1] if endpoint else None,
            scheme=endpoint.split("://", 1)[0] if endpoint else "https",
        )
        return fs, root.split("://", 1)[1]
    return pafs.FileSystem.from_uri(root)


def is_landed_file(relative: str) -> bool:
    """Hidden files (``.name``), files being written or folder metadata (``_name``) and access-rule
    sidecars (``name.access.json``) are not data."""
    return not relative.endswith(ACCESS_SIDECAR_SUFFIX) and not any(
        part.startswith((".", "_")) for part in relative.split("/")
    )


def file_time(epoch_ms: int) -> pd.Timestamp:
    """A file's modified time as both the stream and the listing report it: UTC, millisecond precision
    (what Spark's file source keeps), so the two agree on whether a file was seen."""
    return pd.Timestamp(int(epoch_ms), unit="ms", tz=UTC).tz_convert(None)


def list_landing(root: str, storage_options: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Every data file under ``root`` (recursively): uri, path relative to ``root``, size, modified time."""
    fs, base = filesystem(root, storage_options)
    base = base.rstrip("/")
    rows = []
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.Directory:
        for entry in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            if entry.type != pafs.FileType.File:
                continue
            relative = entry.path[len(base) + 1 :]
            if not is_landed_file(relative):
                continue
            modified = file_time(entry.mtime_ns // 1_000_000)
            rows.append((f"{root.rstrip('/')}/{relative}", relative, int(entry.size), modified))
    frame = pd.DataFrame(rows, columns=LANDED_SCHEMA.fieldNames())
    return frame.astype({"size_bytes": "int64", "modified_at": "datetime64[us]"})


def read_bytes(uri: str, storage_options: Mapping[str, str] | None = None) -> bytes:
    fs, path = filesystem(uri, storage_options)
    with fs.open_input_stream(path) as stream:
        return stream.read()


BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"


def stream_landed_files(
    spark: SparkSession,
    root: str,
    checkpoint: str,
    handle: Callable[[pd.DataFrame, int], None],
    max_files_per_batch: int = 1000,
    storage_options: Mapping[str, str] | None = None,
) -> int:
    """Hand every file landed under ``root`` since the last call to ``handle(files, batch_id)``, once.

    Runs a Structured Streaming query with ``trigger(availableNow=True)``: it processes what is there
    now, in batches of at most ``max_files_per_batch`` files, then stops. ``files`` has the columns of
    ``LANDED_SCHEMA``. Only file metadata flows through Spark here (the ``content`` column is never
    selected, so Spark does not read the bytes); the handler reads and parses files in its workers.
    Returns the number of batches run.
    """
    prefix = root.rstrip("/").split("://", 1)[-1]
    batches = []

    def on_batch(batch: DataFrame, batch_id: int) -> None:
        rows = []
        for r in batch.collect():
            relative = r["path"].split("://", 1)[-1].removeprefix("file:")
            relative = relative[relative.find(prefix) + len(prefix) + 1 :]
            if is_landed_file(relative):
                uri = f"{root.rstrip('/')}/{relative}"
                rows.append((uri, relative, int(r["length"]), file_time(r["modified_ms"])))
        files = pd.DataFrame(rows, columns=LANDED_SCHEMA.fieldNames())
        handle(files.astype({"size_bytes": "int64", "modified_at": "datetime64[us]"}), batch_id)
        batches.append(batch_id)

    fs, base = filesystem(root, storage_options)
    fs.create_dir(base, recursive=True)
    query = (
        spark.readStream.format("binaryFile")
        .schema(BINARY_FILE_SCHEMA)
        .option("recursiveFileLookup", "true")
        .option("maxFilesPerTrigger", max_files_per_batch)
        .load(root)
        .select("path", "length", F.unix_millis("modificationTime").alias("modified_ms"))
        .writeStream.foreachBatch(on_batch)
        .option("checkpointLocation", checkpoint)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    if query.exception() is not None:  # pragma: no cover - awaitTermination raises first
        raise RuntimeError(str(query.exception()))
    return len(batches)


def stream_app_id(checkpoint: str, storage_options: Mapping[str, str] | None = None) -> str:
    """An idempotent-writer id unique to this checkpoint: Spark stores the query id in its metadata.

    Keyed by the checkpoint's own id, so a deleted and recreated checkpoint (batch ids restart at 0)
    is a new writer and its batches are not mistaken for ones already committed.
    """
    fs, path = filesystem(f"{checkpoint.rstrip('/')}/metadata", storage_options)
    with fs.open_input_stream(path) as stream:
        return f"stream-{json.loads(stream.read().decode().splitlines()[0])['id']}"


# Access control for documents: a sidecar ``<file>.access.json`` holds ``{"groups": [...]}`` for that
# file; a folder's ``_access.json`` applies to every document below it (the nearest folder wins, and a
# sidecar beats a folder). A document with no rule is readable by ``public``.
ACCESS_SIDECAR_SUFFIX = ".access.json"
FOLDER_ACCESS_FILE = "_access.json"
PUBLIC_GROUPS = ("public",)


class AccessRuleError(ValueError):
    """An access-rule file that cannot be read: its documents are quarantined, never made public."""


def load_access_rules(
    root: str, storage_options: Mapping[str, str] | None = None
) -> dict[str, list[str] | str]:
    """Every access-rule file under ``root``: the path it governs → its groups (or the error text).

    Keys are a document path for a sidecar and ``folder/`` (``""`` for the root) for a folder rule.
    """
    fs, base = filesystem(root, storage_options)
    base = base.rstrip("/")
    rules: dict[str, list[str] | str] = {}
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return rules
    for entry in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        relative = entry.path[len(base) + 1 :]
        name = relative.rsplit("/", 1)[-1]
        if entry.type != pafs.FileType.File:
            continue
        if name == FOLDER_ACCESS_FILE:
            key = relative[: -len(FOLDER_ACCESS_FILE)]
        elif name.endswith(ACCESS_SIDECAR_SUFFIX):
            key = relative[: -len(ACCESS_SIDECAR_SUFFIX)]
        else:
            continue
        with fs.open_input_stream(entry.path) as stream:
            rules[key] = _parse_groups(relative, stream.read())
    return rules


def _parse_groups(relative: str, content: bytes) -> list[str] | str:
    try:
        groups = json.loads(content.decode("utf-8"))["groups"]
        if not isinstance(groups, list) or not all(isinstance(g, str) and g.strip() for g in groups):
            raise TypeError("'groups' must be a list of non-empty strings")
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable access rule {relative}: {exc}"
    return sorted({g.strip() for g in groups})


def access_groups(rules: dict[str, list[str] | str], path: str) -> list[str]:
    """The groups that may read the document at ``path``; raises AccessRuleError for a broken rule."""
    candidates = [path]
    parts = path.split("/")[:-1]
    candidates += ["/".join(parts[:i]) + "/" if i else "" for i in range(len(parts), -1, -1)]
    for key in candidates:
        if key in rules:
            rule = rules[key]
            if isinstance(rule, str):
                raise AccessRuleError(rule)
            return list(rule)
    return list(PUBLIC_GROUPS)


def landing_fingerprint(listing: pd.DataFrame) -> str:
    """A digest of every landed file's path, size and mtime: it changes whenever the landing zone does."""
    digest = hashlib.sha256()
    for row in listing.sort_values("path").itertuples(index=False):
        digest.update(f"{row.path}\0{row.size_bytes}\0{row.modified_at.value}\n".encode())
    return digest.hexdigest()


def landing_state(root: str, storage_options: Mapping[str, str] | None = None) -> str:
    """The landing zone's fingerprint with its access rules (a rule change re-ingests its documents)."""
    rules = json.dumps(load_access_rules(root, storage_options), sort_keys=True)
    listing = list_landing(root, storage_options)
    return landing_fingerprint(listing) + hashlib.sha256(rules.encode()).hexdigest()


def landing_changed(settings: Settings, sources: list[str]) -> bool:
    """Whether any of ``sources`` has landed something its bronze table has not ingested yet."""
    lakehouse = Lakehouse.from_settings(settings)
    return any(
        not already_ingested(
            lakehouse.checkpoint_path(f"bronze_{source}"),
            landing_state(lakehouse.landing_path(source), lakehouse.storage_options),
            lakehouse.storage_options,
        )
        for source in sources
    )


def _ingested_marker(checkpoint: str) -> str:
    return f"{checkpoint.rstrip('/')}.ingested.json"


def already_ingested(checkpoint: str, state: str, storage_options: Mapping[str, str] | None = None) -> bool:
    """Whether the last complete ingest through ``checkpoint`` saw exactly this landing ``state``: then
    a run has nothing to read and needs no Spark job at all. A new or recreated checkpoint never is."""
    try:
        fs, path = filesystem(_ingested_marker(checkpoint), storage_options)
        with fs.open_input_stream(path) as stream:
            recorded = json.loads(stream.read().decode())
        return recorded == {"stream": stream_app_id(checkpoint, storage_options), "landing": state}
    except (OSError, ValueError, KeyError):  # no marker or no checkpoint yet
        return False


def mark_ingested(checkpoint: str, state: str, storage_options: Mapping[str, str] | None = None) -> None:
    """Record the landing ``state`` a complete ingest through ``checkpoint`` has seen."""
    fs, path = filesystem(_ingested_marker(checkpoint), storage_options)
    with fs.open_output_stream(path) as stream:
        stream.write(
            json.dumps({"stream": stream_app_id(checkpoint, storage_options), "landing": state}).encode()
        )
