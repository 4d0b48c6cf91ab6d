"""Runnable benchmarks and demos on real data: ``python -m benchmarks <name> [...]``."""
