"""Source contracts: the one declaration of a structured source (format, keys, typed columns)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, model_validator

ALLOWED_TYPES = ("string", "int", "long", "double", "boolean", "date", "timestamp")


class ColumnContract(BaseModel):
    name: str
    type: str = "string"
    required: bool = False
    allowed: list[str] | None = None
    min: float | None = None
    max: float | None = None
    # token: replaced by a keyed hash in silver (joins still work); redact: free text, PII replaced
    pii: Literal["token", "redact"] | None = None

    @model_validator(mode="after")
    def _known_type(self) -> ColumnContract:
        if self.type not in ALLOWED_TYPES and not self.type.startswith("decimal("):
            raise ValueError(
                f"column {self.name!r}: unknown type {self.type!r} (allowed: {ALLOWED_TYPES}, decimal(p,s))"
            )
        return self


class Reference(BaseModel):
    """A foreign key: ``column`` must name an existing ``key`` of source ``source``."""

    column: str
    source: str
    key: str


class SourceContract(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    format: Literal["csv", "jsonl", "parquet"]
    primary_key: list[str]
    event_time: str | None = None
    description: str = ""
    columns: list[ColumnContract]
    references: list[Reference] = []
    freshness_days: int | None = None
    # A column the contract does not declare: ``add`` keeps it (as a string column in silver),
    # ``reject`` quarantines the record. A changed type is always quarantined.
    schema_drift: Literal["add", "reject"] = "reject"

    @model_validator(mode="after")
    def _keys_are_columns(self) -> SourceContract:
        names = {c.name for c in self.columns}
        event_time = [self.event_time] if self.event_time else []
        keys = [*self.primary_key, *event_time, *(r.column for r in self.references)]
        missing = [k for k in keys if k not in names]
        if missing:
            raise ValueError(f"source {self.name!r}: key or event-time columns not declared: {missing}")
        return self

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def load_sources(path: Path) -> list[SourceContract]:
    """Read and validate the sources file; a bad declaration fails loudly with the field that is wrong."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    sources = [SourceContract.model_validate(item) for item in data.get("sources", [])]
    by_name = {s.name: s for s in sources}
    for source in sources:
        for ref in source.references:
            if ref.source not in by_name or ref.key not in by_name[ref.source].column_names:
                raise ValueError(f"source {source.name!r}: reference to unknown {ref.source}.{ref.key}")
    return sources
