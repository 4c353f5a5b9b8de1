"""Benchmarks: scripts that measure the product at size (see each module's docstring)."""
