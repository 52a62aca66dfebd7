"""Retrieval evaluation of the active index against the gold set, logged to MLflow."""
