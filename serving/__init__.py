"""Serving: the query side over LanceDB (search today; the HTTP API and Python client build on it)."""
