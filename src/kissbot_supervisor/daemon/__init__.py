"""The supervisor process.

``supervisor`` is the event pump that wires the core to a backend, signals and
requests; ``control`` serves the control socket.
"""
