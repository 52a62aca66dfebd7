"""The landing zone: list what has landed (cheap metadata) and read a file's bytes (in Spark workers).

Listing goes through Arrow's filesystem layer, so a local folder and object storage look alike, and
empty files are seen too (Spark's file sources skip them, and an empty file must still be accounted for).
"""

from __future__ import annotations

from datetime import UTC

import pandas as pd
import pyarrow.fs as pafs
from pyspark.sql import types as T

LANDED_SCHEMA = T.StructType(
    [
        T.StructField("uri", T.StringType(), False),
        T.StructField("path", T.StringType(), False),
        T.StructField("size_bytes", T.LongType(), False),
        T.StructField("modified_at", T.TimestampType(), False),
    ]
)


def filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in root:
        return pafs.LocalFileSystem(), root
    if root.startswith(("s3://", "s3a://")):
        # Runs in Spark's Python workers too, so the endpoint comes from the environment's settings;
        # credentials from AWS's standard chain.
        from resources.settings import get_settings

        settings = get_settings()
        endpoint = settings.s3_endpoint_url
        fs = pafs.S3FileSystem(
            region=settings.s3_region,
            endpoint_override=endpoint.split("://", 1)[-1] if endpoint else None,
            scheme=endpoint.split("://", 1)[0] if endpoint else "https",
        )
        return fs, root.split("://", 1)[1]
    return pafs.FileSystem.from_uri(root)


def list_landing(root: str) -> pd.DataFrame:
    """Every file under ``root`` (recursively): uri, path relative to ``root``, size and modified time.

    Hidden files (``.name``) and sidecars being written (``_name``) are skipped.
    """
    fs, base = filesystem(root)
    base = base.rstrip("/")
    rows = []
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.Directory:
        for entry in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            if entry.type != pafs.FileType.File:
                continue
            relative = entry.path[len(base) + 1 :]
            if any(part.startswith((".", "_")) for part in relative.split("/")):
                continue
            modified = pd.Timestamp(entry.mtime_ns, unit="ns", tz=UTC).floor("us").tz_convert(None)
            rows.append((f"{root.rstrip('/')}/{relative}", relative, int(entry.size), modified))
    frame = pd.DataFrame(rows, columns=LANDED_SCHEMA.fieldNames())
    return frame.astype({"size_bytes": "int64", "modified_at": "datetime64[us]"})


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()
