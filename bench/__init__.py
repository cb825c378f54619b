"""Benchmarks: they print figures and assert nothing (see README.md here)."""
