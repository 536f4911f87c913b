"""Prefect tasks: thin wrappers around `qa_lib`, adding retries, caching, artifacts and logging."""
