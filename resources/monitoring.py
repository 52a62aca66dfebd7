"""Where the monitoring tables and reports live, and the thresholds the drift and trend checks judge by."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from resources.settings import Settings

EVALUATION_HISTORY_TABLE = "evaluation_history"
MONITORING_RESULTS_TABLE = "monitoring_results"


class Monitoring(BaseModel):
    """The monitoring checks' configuration (docs/monitoring.md), one field per `monitor_*` setting."""

    delta_uri: str
    audit_uri: str
    feedback_uri: str
    reports_dir: str
    storage_options: dict[str, str] = {}
    answer_min_similarity: float = 0.38
    trend_tolerance: float = 0.05
    trend_severity: Literal["warn", "block"] = "warn"
    alpha: float = 0.01
    embedding_min_distance: float = 0.05
    unanswered_max: float = 0.3
    psi_max: float = 0.2
    reference_days: int = 7
    min_rows: int = 20

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(
            delta_uri=s.delta_uri,
            audit_uri=s.audit_uri,
            feedback_uri=s.feedback_uri,
            reports_dir=str(s.home / "monitoring"),
            storage_options=s.object_store_options(),
            answer_min_similarity=s.answer_min_similarity,
            trend_tolerance=s.monitor_trend_tolerance,
            trend_severity=s.monitor_trend_severity,
            alpha=s.monitor_alpha,
            embedding_min_distance=s.monitor_embedding_min_distance,
            unanswered_max=s.monitor_unanswered_max,
            psi_max=s.monitor_psi_max,
            reference_days=s.monitor_reference_days,
            min_rows=s.monitor_min_rows,
        )

    def table_uri(self, name: str) -> str:
        return f"{self.delta_uri.rstrip('/')}/{name}"

    @property
    def history_uri(self) -> str:
        return self.table_uri(EVALUATION_HISTORY_TABLE)

    @property
    def results_uri(self) -> str:
        return self.table_uri(MONITORING_RESULTS_TABLE)

    @property
    def reports_path(self) -> Path:
        return Path(self.reports_dir)
