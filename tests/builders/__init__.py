"""Builders of kernel messages for tests and benchmarks (what the daemon only decodes)."""
