"""Bench: host latency of artifacts under target settings, in child processes."""
