"""Benchmarks: each prints a table with ratios against a baseline run side by side."""
