"""How patiently a step retries a transient engine failure (``assets/retries.py`` decides what is transient).

A resource like the engines, so the policy comes from the settings every other resource is built from,
and a run launched by the daemon or ``dagster asset materialize`` uses the same values as the CLI's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from resources.settings import Settings

if TYPE_CHECKING:
    from dagster import RetryPolicy


class Retries(BaseModel):
    max_retries: int = 3
    delay_seconds: float = 2.0

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(max_retries=s.retry_max_retries, delay_seconds=s.retry_delay_seconds)

    def policy(self) -> RetryPolicy:
        """Exponential backoff with jitter: retries of many steps that failed together spread out."""
        from dagster import Backoff, Jitter, RetryPolicy

        return RetryPolicy(
            max_retries=self.max_retries,
            delay=self.delay_seconds,
            backoff=Backoff.EXPONENTIAL,
            jitter=Jitter.PLUS_MINUS,
        )
