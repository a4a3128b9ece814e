"""Reproducible benchmarks; `python -m benchmarks` runs them all and writes one report."""
