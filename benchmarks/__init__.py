"""Benchmarks of the unified ops against native calls (``unibackend bench``)."""
