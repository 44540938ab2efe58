"""Reproducible performance benchmarks of llmt (see README.md)."""
