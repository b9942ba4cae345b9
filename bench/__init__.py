"""Benchmark of the worker against the database ceiling (python -m bench)."""
