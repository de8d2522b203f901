"""``daskhpc exporter``: the batch system's Prometheus metrics (server, collectors, one source per scheduler)."""
