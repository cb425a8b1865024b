"""What the outside world sees of the fleet.

``observer`` wires them; ``events`` (EVENT objects), ``metrics`` (Prometheus
text and JSON), ``metricslog`` (a JSON-lines file), ``http`` (``GET
/metrics``) and ``hooks`` (the ``on_failure`` command).
"""
