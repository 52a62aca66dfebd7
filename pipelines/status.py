"""What `groundwork status` reports, read without a JVM (delta-rs and LanceDB directly)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from assets.quarantine import (
    INGESTION_RUNS_TABLE,
    LAYERS,
    last_ingestion_runs,
    quarantine_table,
    read_quarantine,
)
from assets.structured.contracts import load_sources
from pipelines.failure_log import recent_failures
from resources.kafka import topic_source_lags
from resources.lakehouse import Lakehouse
from resources.lancedb import LanceDBStore
from resources.lancedb.tables import open_active
from resources.monitoring import EVALUATION_HISTORY_TABLE, MONITORING_RESULTS_TABLE
from resources.settings import Settings

DOCUMENT_TABLES = ["bronze_documents", "silver_documents", "document_chunks"]


def collect_status(settings: Settings) -> dict[str, Any]:
    lakehouse = Lakehouse.from_settings(settings)
    names = [*DOCUMENT_TABLES]
    for source in load_sources(settings.sources_file):
        names += [f"bronze_{source.name}", f"silver_{source.name}"]
    names += [*(quarantine_table(layer) for layer in LAYERS), INGESTION_RUNS_TABLE]
    names += [EVALUATION_HISTORY_TABLE, MONITORING_RESULTS_TABLE]  # docs/monitoring.md
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
    db = LanceDBStore.from_settings(settings).connect()
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
    rows = read_quarantine(lakehouse)
    if len(rows):
        for (layer, source), group in rows.sort_values("quarantined_at").groupby(["layer", "source"]):
            quarantine.append(
                {
                    "layer": layer,
                    "source": source,
                    "rows": len(group),
                    "latest_reason": group["reason"].iloc[-1],
                }
            )
    ingestion = [
        {
            k: run[k]
            for k in ("source", "run_id", "landed", "accepted", "quarantined", "duplicates", "deleted")
        }
        | {"recorded_at": run["recorded_at"]}
        for run in last_ingestion_runs(lakehouse)
    ]
    return {
        "home": str(settings.home),
        "tables": tables,
        "ingestion": ingestion,
        "quarantine": quarantine,
        "topics": topic_source_lags(settings),
        "failures": recent_failures(settings, limit=5),
    }
