"""KissBot's names, rules and file interfaces.

``names`` holds the names and rules every layer needs (the hub's name, the
login rule, unit names; it imports ``re`` only, so it sits below every layer);
``readiness`` watches the signals no service manager gives (a ready file, a
socket that answers); ``filecommands`` serves the command file and relays
broadcasts.
"""
