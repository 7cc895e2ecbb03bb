"""Benchmarks, run as plain scripts (see each module's docstring)."""
