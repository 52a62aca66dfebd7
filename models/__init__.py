"""Model and prompt versioning: the embedding model's identity and the prompt templates.

Prompt templates live in ``models/prompts/`` as files (MLflow prompt-registry syntax, ``{{ var }}``);
registering them and the embedding model in MLflow, with aliases, is the MLflow issue's work.
"""
