"""Fleet view over Prometheus."""
