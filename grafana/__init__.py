"""Grafana dashboards for spacelift-exporter, generated from Python (see generate.py)."""
