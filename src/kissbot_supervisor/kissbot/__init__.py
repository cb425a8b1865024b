"""KissBot's names, rules and file interfaces.

``names`` holds the names and rules every layer needs (the hub's name, the
login rule, unit names; it imports ``re`` only, so it sits below every layer);
``readiness`` watches the signals no service manager gives (a ready file, a
hub that answers a bot's ping, its ``hub_state``), with ``hubcheck`` building
the probe's bytes; ``filecommands`` serves the command file and relays
broadcasts.
"""
