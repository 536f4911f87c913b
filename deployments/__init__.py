"""Prefect deployments of the qa-pipeline flows."""
