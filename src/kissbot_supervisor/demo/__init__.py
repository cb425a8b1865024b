"""A demo KissBot fleet: stand-ins for ``main.py`` (a bot) and ``eventsub_hub.py`` (the hub).

Used by ``make run``, the integration tests and the benchmarks. Run
``python -m kissbot_supervisor.demo bot --help`` or ``... hub --help``.
Both programs accept the upstream command lines and add fault-injection flags
(crash, hang, flood, ignore SIGTERM, refuse to start) so the supervisor can be
tested against every failure the real programs show.

Imports are kept to a few standard library modules: hundreds of demo bots
have to fit on a two-core machine.
"""
