"""What every materialization tells the Dagster UI: rows, Delta version, path and schema."""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, MetadataValue, TableColumn, TableColumnDep, TableColumnLineage, TableSchema
from pyspark.sql import types as T

from resources.lakehouse import Lakehouse


def table_schema(schema: T.StructType) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(name=f.name, type=f.dataType.simpleString(), description=None) for f in schema.fields
        ]
    )


def column_lineage(deps: dict[str, list[tuple[str, str]]]) -> TableColumnLineage:
    """Column → the (upstream asset, column) pairs it is derived from, for the UI's column lineage."""
    return TableColumnLineage(
        deps_by_column={
            column: [TableColumnDep(asset_key=AssetKey(asset), column_name=name) for asset, name in sources]
            for column, sources in deps.items()
        }
    )


def delta_metadata(
    lakehouse: Lakehouse, name: str, schema: T.StructType | None = None, **extra: Any
) -> dict[str, Any]:
    """Rows, version, path and schema (the table's own, from its Delta log, unless given)."""
    info = lakehouse.info(name)
    metadata: dict[str, Any] = {
        "dagster/column_schema": table_schema(schema or lakehouse.schema(name)),
        "table_path": MetadataValue.path(lakehouse.table_path(name)),
    }
    if info is not None:
        metadata["dagster/row_count"] = info.rows
        metadata["delta_version"] = info.version
    metadata.update(extra)
    return metadata
