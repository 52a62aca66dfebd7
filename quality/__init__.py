"""Quality gates: Great Expectations suites as code, run as blocking Dagster asset checks."""
