"""Software-defined assets, one folder per concern; each folder keeps its plain transformations
(testable without Dagster) beside the thin Dagster file that wires them to resources."""
