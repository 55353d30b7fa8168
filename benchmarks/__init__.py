"""Benchmarks of the search service: run ``python benchmarks/NAME.py`` (see README.md)."""
