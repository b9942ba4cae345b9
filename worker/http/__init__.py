"""HTTP: the gateway and the worker's health and metrics endpoints."""
