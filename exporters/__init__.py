"""Exporters: render what the daemon holds for Prometheus and Grafana. They only read."""
