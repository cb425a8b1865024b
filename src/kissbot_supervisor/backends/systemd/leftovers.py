"""The end of ``systemctl stop kissbot-supervisor``: no fleet left behind.

The supervisor stops the bots, then the hub, when its unit is stopped. If it
dies on the way (SIGKILL at ``TimeoutStopSec=``, the OOM killer, an operator's
``kill -9``), the units it had not stopped yet kept running while the stop
reported success. The unit's ``ExecStopPost=`` runs this: when the unit is being
stopped for good (its job is a ``stop``, not a ``restart`` nor systemd's own
restart after a crash, which leave the fleet to the next supervisor to adopt),
whatever still runs of the fleet is stopped, bots first, and waited for.
"""

from __future__ import annotations

import os
import time

from ...kissbot.names import HUB_UNIT, SERVICE_SUFFIX
from ...runtime.loop import Loop
from .bus import BusConnection, BusError
from .messages import (
    JOB_INTERFACE,
    UNIT_INTERFACE,
    SystemdError,
    check_reply,
    get_property,
    get_unit_by_pid,
    list_units_by_patterns,
    parse_get,
    parse_list_units,
    parse_object_path,
    stop_unit,
)

BOT_UNITS = "kissbot-bot@*" + SERVICE_SUFFIX
RUNNING_STATES = ("active", "activating", "reloading", "deactivating")
POLL_SEC = 0.2


class LeftoversError(Exception):
    """The fleet could not be stopped; the message says what is still running."""


def own_job_type(bus: BusConnection, pid: int) -> str | None:
    """The type of the job systemd runs for the unit of process ``pid`` (``stop``,
    ``restart``, ...), or None when there is none or it cannot be had."""
    try:
        unit = parse_object_path(bus.call_sync(get_unit_by_pid(pid)))
        job_id, job_path = parse_get(bus.call_sync(get_property(unit, UNIT_INTERFACE, "Job")))
        if not job_id:
            return None
        job_type = parse_get(bus.call_sync(get_property(job_path, JOB_INTERFACE, "JobType")))
    except (BusError, SystemdError, ValueError, TypeError):
        return None
    return job_type if isinstance(job_type, str) else None


def _running(bus: BusConnection) -> list[str]:
    reply = bus.call_sync(list_units_by_patterns(RUNNING_STATES, [HUB_UNIT, BOT_UNITS]))
    return sorted(u.name for u in parse_list_units(reply))


def stop_leftovers(address: str, wait_sec: float) -> str:
    """Stop what is left of the fleet if the supervisor's unit is being stopped; a
    sentence saying what was done. Raises BusError/SystemdError when it cannot."""
    loop = Loop()
    bus = None
    try:
        bus = BusConnection(loop, address)
        job = own_job_type(bus, os.getpid())
        if job != "stop":
            return f"the unit's job is {job or 'none'}: the fleet is left to the next supervisor"
        left = _running(bus)
        if not left:
            return "the fleet was stopped by the supervisor"
        # Bots first (their units are ordered after the hub's: the hub's stop job
        # waits for theirs), each with its own stop timeout.
        for unit in sorted(left, key=lambda name: name == HUB_UNIT):
            check_reply(bus.call_sync(stop_unit(unit)))
        deadline = time.monotonic() + wait_sec
        while still := _running(bus):
            if time.monotonic() > deadline:
                raise LeftoversError(
                    f"still running {wait_sec:g} s after being stopped: {', '.join(still)}"
                )
            time.sleep(POLL_SEC)  # a one-shot helper: polling the manager is its whole job
        return f"the supervisor had left {len(left)} units running; stopped: {', '.join(left)}"
    finally:
        if bus is not None:
            bus.close()
        loop.close()
