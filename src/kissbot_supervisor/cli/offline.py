"""The fleet's state read from systemd itself, for ``kissbotctl status`` with the supervisor down.

With the systemd backend the hub and the bots are transient units that outlive
the supervisor: when it is down (crashed, stopped, waiting in auto-restart),
systemd still knows every unit's state. This module asks it over the system
bus, with jeepney's blocking API (which honours ``DBUS_SYSTEM_BUS_ADDRESS``)
and the message builders and parsers of :mod:`.manager`:

1. ``ListUnitsByPatterns([], ["kissbot-*.service"])``: the loaded units;
2. for each of ours, ``GetAll`` of the ``Unit`` and ``Service`` interfaces
   (all calls sent at once, the replies matched by serial);
3. the supervisor's own unit, when not listed (systemd unloads an inactive
   unit nothing refers to): ``LoadUnit``, then ``GetAll`` of ``Unit``.

:func:`build_status` turns the answers into the STATUS object the supervisor
itself serves (same keys), marked ``"source": "systemd"``, with
``supervisor: {"running": false, ...}``. What only the supervisor knows is
absent: tokens (``token_state`` None), the wanted state (guessed: see
:func:`wanted`), and units systemd no longer has loaded (a stopped transient
unit is garbage-collected, so a stopped bot is simply not listed).

Used by a short-lived CLI process only: importing it loads jeepney and
:mod:`..core`, which the resident daemon has anyway, but ``kissbotctl`` loads
it only when the control socket is absent.
"""

from __future__ import annotations

import os
import time

from jeepney import HeaderFields

from ..backends.systemd.messages import (
    MAX_IN_FLIGHT,
    SERVICE_INTERFACE,
    UNIT_INTERFACE,
    SystemdError,
    UnitInfo,
    get_all_properties,
    list_units_by_patterns,
    load_unit,
    parse_get_all,
    parse_list_units,
    parse_object_path,
)
from ..core import describe_exit
from ..core.records import record
from ..kissbot.names import SUPERVISOR_UNIT, name_of_unit
from ..status import OFFLINE_SOURCE, process_entry, status_object

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from jeepney import Message
    from jeepney.io.blocking import DBusConnection

    from ..status import ProcessEntry, Status, SupervisorInfo

__all__ = [
    "OfflineError",
    "UnitState",
    "build_status",
    "map_state",
    "read_status",
    "wanted",
]

PATTERNS = ("kissbot-*.service",)
USEC_INFINITY = 2**64 - 1  # "not available" for MemoryCurrent & co.
CLD_KILLED, CLD_DUMPED = 2, 3  # ExecMainCode: siginfo's si_code


class OfflineError(Exception):
    """systemd could not be read; ``message`` is one sentence for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@record
class UnitState:
    """What systemd said about one unit: its ListUnits row and two property sets."""

    info: UnitInfo
    unit: dict[str, Any]  # org.freedesktop.systemd1.Unit
    service: dict[str, Any]  # org.freedesktop.systemd1.Service


# --- pure: systemd's view -> the STATUS object ---------------------------------------


def map_state(active: str, sub: str) -> str:
    """A unit's ActiveState/SubState as one of the supervisor's states."""
    if active in ("active", "reloading"):
        return "running"
    if active == "activating":
        return "backoff" if sub == "auto-restart" else "starting"
    if active == "deactivating":
        return "stopping"
    if active == "failed":
        return "failed"
    return "stopped"  # inactive, maintenance, or anything newer


def wanted(active: str) -> bool:
    """A guess at ``want``, which only the supervisor knows.

    A unit that runs or is (re)starting is wanted. So is a ``failed`` one: its
    process failed and the supervisor has not given up on it (it clears the
    units it stops: a stop is no failure), a process that should run and does
    not; counting it makes ``status`` exit 3. An ``inactive`` unit was stopped
    on purpose.
    """
    return active in ("active", "reloading", "activating", "failed")


def _int(value: object) -> int | None:
    """A property as an int; None when absent or systemd's "infinity" (not available)."""
    if isinstance(value, bool) or not isinstance(value, int) or value == USEC_INFINITY:
        return None
    return value


def _last_exit(service: Mapping[str, Any]) -> str | None:
    """How the main process last ended; None while it runs (systemd resets it at start)."""
    if not _int(service.get("ExecMainExitTimestamp")):
        return None
    code = _int(service.get("ExecMainCode"))
    status = _int(service.get("ExecMainStatus")) or 0
    if code in (CLD_KILLED, CLD_DUMPED):
        return describe_exit(None, status)
    return describe_exit(status, None)


def _exec_argv(value: object) -> list[str] | None:
    """The argv of a unit's ``ExecStart`` (``a(sasbttttuii)``: path, argv, ...); None if
    it is not one command."""
    if not isinstance(value, list | tuple) or len(value) != 1:
        return None
    command = value[0]
    if not isinstance(command, list | tuple) or len(command) < 2:
        return None
    argv = command[1]
    if not isinstance(argv, list | tuple) or not all(isinstance(a, str) for a in argv):
        return None
    return list(argv)


def _reason(active: str, sub: str, result: str, last_exit: str | None) -> str | None:
    if active in ("active", "reloading"):
        return None
    text = f"unit {active} ({sub})" if sub else f"unit {active}"
    if result and result != "success":
        text += f", result {result}"
    if last_exit:
        text += f", {last_exit}"
    if sub == "auto-restart":
        text += "; systemd restarts it"  # a unit made by an earlier version
    elif active == "failed":
        # Only the supervisor restarts its units; at its start it adopts the fleet.
        text += "; the supervisor starts it again once it runs"
    return text


def unit_entry(name: str, state: UnitState, now: float) -> ProcessEntry:
    """One process of the STATUS object from systemd's view of its unit."""
    active, sub = state.info.active_state, state.info.sub_state
    service = state.service
    pid = _int(service.get("MainPID")) or None
    started = _int(service.get("ExecMainStartTimestamp"))
    uptime = round(max(0.0, now - started / 1e6), 3) if pid and started else None
    last_exit = _last_exit(service)
    result = str(service.get("Result") or "")
    status_text = service.get("StatusText")
    changed = _int(state.unit.get("StateChangeTimestamp"))
    exited = _int(service.get("ExecMainExitTimestamp"))
    entry = process_entry(
        name,
        state=map_state(active, sub),
        want=wanted(active),
        pid=pid,
        uptime_s=uptime,
        restarts=_int(service.get("NRestarts")) or 0,
        rss_bytes=_int(service.get("MemoryCurrent")) if pid else None,
        last_exit=last_exit,
        token_state=None,
        reason=_reason(active, sub, result, last_exit),
        status_text=status_text if isinstance(status_text, str) and status_text else None,
        since=changed / 1e6 if changed else None,
        argv=_exec_argv(service.get("ExecStart")),
        # systemd keeps the last exit only.
        exits=[{"time": exited / 1e6, "exit": last_exit}] if exited and last_exit else [],
    )
    entry["unit"], entry["active_state"], entry["sub_state"] = state.info.name, active, sub
    return entry


def build_status(units: Sequence[UnitState], now: float) -> Status:
    """The STATUS object from the units systemd listed (any order; others are ignored)."""
    supervisor: SupervisorInfo = {"running": False, "unit": None}
    entries: list[ProcessEntry] = []
    for state in units:
        if state.info.name == SUPERVISOR_UNIT:
            supervisor["unit"] = SUPERVISOR_UNIT
            supervisor["active_state"] = state.info.active_state
            supervisor["sub_state"] = state.info.sub_state
            continue
        name = name_of_unit(state.info.name)
        if name is not None:
            entries.append(unit_entry(name, state, now))
    entries.sort(key=lambda e: e["name"])
    return status_object("systemd", supervisor, entries, source=OFFLINE_SOURCE)


# --- I/O: one blocking connection to the system bus ------------------------------------


def _call_all(conn: DBusConnection, messages: Sequence[Message], deadline: float) -> list[Message]:
    """Send the messages, at most MAX_IN_FLIGHT unanswered at a time; the replies in order.

    The bus refuses calls past its max_replies_per_connection (128 on a stock
    system bus), and a 100-bot fleet needs 200 GetAll here.
    """
    serials: list[int] = []
    replies: dict[int, Message] = {}
    waiting: set[int] = set()
    todo = iter(messages)
    while True:
        while len(waiting) < MAX_IN_FLIGHT:
            msg = next(todo, None)
            if msg is None:
                break
            serial = next(conn.outgoing_serial)
            conn.send(msg, serial=serial)
            serials.append(serial)
            waiting.add(serial)
        if not waiting:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        msg = conn.receive(timeout=left)
        reply_to = msg.header.fields.get(HeaderFields.reply_serial)
        if reply_to in waiting:
            waiting.discard(reply_to)
            replies[reply_to] = msg
    return [replies[s] for s in serials]


def _supervisor_unit(conn: DBusConnection, deadline: float) -> UnitState | None:
    """The supervisor's unit when systemd has unloaded it (inactive, nothing refers to it).

    ``LoadUnit`` loads it from its file for the question (as ``systemctl status``
    does); None when there is no such unit file.
    """
    (reply,) = _call_all(conn, [load_unit(SUPERVISOR_UNIT)], deadline)
    path = parse_object_path(reply)
    (props,) = _call_all(conn, [get_all_properties(path, UNIT_INTERFACE)], deadline)
    unit = parse_get_all(props)
    if unit.get("LoadState") != "loaded":
        return None
    info = UnitInfo(
        name=SUPERVISOR_UNIT,
        description=str(unit.get("Description", "")),
        load_state="loaded",
        active_state=str(unit.get("ActiveState", "")),
        sub_state=str(unit.get("SubState", "")),
        following="",
        path=path,
        job_id=0,
        job_type="",
        job_path="/",
    )
    return UnitState(info, unit, {})


def read_status(timeout: float = 10.0) -> Status:
    """The STATUS object as systemd sees it; raises :class:`OfflineError` if it cannot be read."""
    from jeepney.io.blocking import open_dbus_connection

    deadline = time.monotonic() + timeout
    try:
        conn = open_dbus_connection(bus="SYSTEM", auth_timeout=timeout)
    except (OSError, ValueError) as exc:  # no socket, refused, auth failed, timed out
        address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or "the default address"
        raise OfflineError(f"cannot connect to the system bus at {address} ({exc})") from None
    try:
        with conn:
            (listing,) = _call_all(conn, [list_units_by_patterns([], PATTERNS)], deadline)
            infos = [
                info
                for info in parse_list_units(listing)
                if info.name == SUPERVISOR_UNIT or name_of_unit(info.name) is not None
            ]
            calls = []
            for info in infos:
                calls.append(get_all_properties(info.path, UNIT_INTERFACE))
                calls.append(get_all_properties(info.path, SERVICE_INTERFACE))
            replies = _call_all(conn, calls, deadline)
            states = [
                UnitState(info, parse_get_all(replies[2 * i]), parse_get_all(replies[2 * i + 1]))
                for i, info in enumerate(infos)
            ]
            if not any(info.name == SUPERVISOR_UNIT for info in infos):
                supervisor = _supervisor_unit(conn, deadline)
                if supervisor is not None:
                    states.append(supervisor)
    except SystemdError as exc:
        raise OfflineError(f"systemd refused to tell the units' state ({exc})") from None
    except TimeoutError:
        raise OfflineError(f"no answer from systemd within {timeout:g} s") from None
    except OSError as exc:
        raise OfflineError(f"the system bus connection failed ({exc})") from None
    return build_status(states, time.time())
