"""Benchmarks: each prints its figures, measured against a baseline in the same run."""

import os

# Lance logs a deprecation warning on every query that selects columns (see resources/lancedb/).
os.environ.setdefault("LANCEDB_LOG", "error")
