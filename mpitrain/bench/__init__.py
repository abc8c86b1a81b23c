"""Benchmarks shipped with mpitrain: `python -m mpitrain bench allreduce|train`."""
