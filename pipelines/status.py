"""What `groundwork status` reports, read without a JVM (delta-rs and LanceDB directly)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from assets.embeddings.index import open_active
from assets.quarantine import QUARANTINE_TABLE
from assets.structured.contracts import load_sources
from pipelines.failures import recent_failures
from resources import build_resources
from resources.lakehouse import read_table
from resources.settings import Settings

DOCUMENT_TABLES = ["bronze_documents", "silver_documents", "document_chunks"]


def collect_status(settings: Settings) -> dict[str, Any]:
    resources = build_resources(settings)
    lakehouse = resources["lakehouse"]
    names = [*DOCUMENT_TABLES]
    for source in load_sources(settings.sources_file):
        names += [f"bronze_{source.name}", f"silver_{source.name}"]
    names.append(QUARANTINE_TABLE)
    tables = []
    for name in names:
        info = lakehouse.info(name)
        tables.append(
            {
                "name": name,
                "engine": "delta",
                "rows": info.rows if info else 0,
                "version": info.version if info else None,
                "updated_at": info.updated_at if info else None,
                "path": lakehouse.table_path(name),
            }
        )
    db = resources["lancedb"].connect()
    table_name = settings.embeddings_table
    table = open_active(db, table_name)
    row = {
        "name": table_name,
        "engine": "lancedb",
        "rows": 0,
        "version": None,
        "updated_at": None,
        "path": None,
    }
    if table is not None:
        versions = table.list_versions()
        updated = max((v["timestamp"] for v in versions), default=None)
        if isinstance(updated, datetime) and updated.tzinfo is None:
            updated = updated.replace(tzinfo=UTC)
        row |= {
            "name": f"{table_name} → {table.name}",
            "rows": table.count_rows(),
            "version": table.version,
            "updated_at": updated,
            "path": f"{settings.lancedb_uri}/{table.name}.lance",
        }
    tables.append(row)
    quarantine = []
    if lakehouse.exists(QUARANTINE_TABLE):
        rows = read_table(lakehouse.table_path(QUARANTINE_TABLE)).to_pandas()
        for source, group in rows.sort_values("quarantined_at").groupby("source"):
            quarantine.append(
                {"source": source, "rows": len(group), "latest_reason": group["reason"].iloc[-1]}
            )
    return {
        "home": str(settings.home),
        "tables": tables,
        "quarantine": quarantine,
        "failures": recent_failures(settings, limit=5),
    }
