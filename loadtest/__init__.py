"""Locust load tests that measure what chat users feel: time to first token, time per output
token, throughput and errors, against SLOs, with a report of pictures (see README)."""
