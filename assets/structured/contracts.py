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


# Where a record came from, per kind of source: bronze keeps it, silver carries it to each row.
FILE_PROVENANCE = ["_source_file", "_line"]
TOPIC_PROVENANCE = ["_topic", "_partition", "_offset"]


class SourceContract(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    # A file source lands files of ``format`` in its landing folder; a topic source reads the Kafka
    # ``topic`` instead (JSON messages keyed by the primary key), with the same contract and silver MERGE.
    format: Literal["csv", "jsonl", "parquet"] | None = None
    topic: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,249}$")
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
    def _file_or_topic(self) -> SourceContract:
        if self.topic is None and self.format is None:
            raise ValueError(f"source {self.name!r}: declare a file format (csv, jsonl, parquet) or a topic")
        if self.topic is not None and self.format not in (None, "jsonl"):
            raise ValueError(
                f"source {self.name!r}: a topic's messages are JSON objects; format {self.format!r} "
                "cannot apply (leave it out)"
            )
        if self.topic is not None:
            self.format = "jsonl"
        return self

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

    @property
    def provenance(self) -> list[str]:
        """The bronze columns that say where a record came from (file and line, or topic, partition and
        offset): silver keeps them on each row and orders ties by them, the quarantine names them."""
        return TOPIC_PROVENANCE if self.topic else FILE_PROVENANCE


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
