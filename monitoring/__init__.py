"""Quality over time: the evaluation trend, embedding, query and data drift, and answer feedback.

Plain functions over arrays, Arrow and Delta tables (no Dagster, no Spark); ``monitoring.checks`` wires
them to Dagster asset checks. docs/monitoring.md says what each check measures and when it alerts.
"""
