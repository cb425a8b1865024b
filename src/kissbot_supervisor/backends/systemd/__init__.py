"""The systemd backend: transient units over D-Bus.

``units`` (unit names and properties) and ``messages`` (the D-Bus calls and
their parsers) do no I/O; ``bus`` is the connection inside our event loop;
``backend`` carries out the actions; ``export`` writes equivalent static unit
files.
"""
