"""KissBot's own file interfaces in ``pids/``.

``readiness`` watches the signals no service manager gives (a ready file, a
socket that answers); ``filecommands`` serves the command file and relays
broadcasts.
"""
