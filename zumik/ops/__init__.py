"""Metrics counters and snapshots, their Prometheus rendering, logs."""
