"""Helpers for benchmarks/run_peers.py."""
