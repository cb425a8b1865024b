"""Benchmarks: kissbot-supervisor's native backend against supervisord (``make bench``)."""
