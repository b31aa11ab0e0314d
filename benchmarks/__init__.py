"""Benchmarks of the fwxtwisted gateway: python benchmarks/run.py."""
