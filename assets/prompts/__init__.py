"""Prompt templates registered in MLflow's prompt registry."""
