"""Benchmarks: qa-pipeline against a faithful reproduction of the tutorial's pipeline."""
