"""kissbot-supervisor: a process supervisor for KissBot Twitch bot fleets.

Kept free of imports on purpose: bots import ``kissbot_supervisor.notify`` and
the demo fleet runs ``python -m kissbot_supervisor.demo``, and neither should pay
for the supervisor's own modules.
"""

__version__ = "0.1.0"
