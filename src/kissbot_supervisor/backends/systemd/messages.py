"""systemd's D-Bus API as messages and parsers: sans-I/O, in jeepney's manner.

Every function here builds a :class:`jeepney.low_level.Message` (a method call
or an ``AddMatch`` rule) or turns a received message into plain typed values;
nothing opens a socket, so unit tests check them with hand-built messages and
the backend's thin I/O layer sends and receives them.

The calls, all on ``org.freedesktop.systemd1.Manager`` at ``/org/freedesktop/systemd1``
(signatures as systemd documents them)::

    StartTransientUnit(s name, s mode, a(sv) props, a(sa(sv)) aux) -> o job
    StartUnit / RestartUnit / StopUnit(s name, s mode) -> o job
    KillUnit(s name, s whom, i signal)
    ResetFailedUnit(s name)
    GetUnit / LoadUnit(s name) -> o unit
    ListUnitsByPatterns(as states, as patterns) -> a(ssssssouso)
    Subscribe()
    signals: JobRemoved(u id, o job, s unit, s result), UnitRemoved(s unit, o path)

Unit properties come from ``org.freedesktop.DBus.Properties`` on the unit's
object path (:func:`unit_path`): ``Get(s iface, s name) -> v``,
``GetAll(s iface) -> a{sv}``, and the signal ``PropertiesChanged(s iface,
a{sv} changed, as invalidated)``, which names the unit only by its path.

Restarting early: ``StartUnit`` on a unit in ``auto-restart`` does not cut the
wait short (systemd queues the job until its own restart timer fires);
``RestartUnit`` does (stop, which ends auto-restart at once, then start).
"""

from __future__ import annotations

import re

from jeepney import DBusAddress, MatchRule, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.low_level import HeaderFields, Message, MessageType

from ...core.records import record

TYPE_CHECKING = False  # no typing at run time (see records.py)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from .units import Property

SYSTEMD_BUS_NAME = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
JOB_INTERFACE = "org.freedesktop.systemd1.Job"
SERVICE_INTERFACE = "org.freedesktop.systemd1.Service"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit/"

# Error names the backend tells apart.
ERROR_NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
ERROR_UNIT_EXISTS = "org.freedesktop.systemd1.UnitExists"
# The bus daemon's answer to a call past max_replies_per_connection; the call is dropped.
ERROR_LIMITS_EXCEEDED = "org.freedesktop.DBus.Error.LimitsExceeded"

# Calls we keep awaiting replies at once: half the system bus's default
# max_replies_per_connection (128), and enough that 300 units' calls clear in a
# few round trips.
MAX_IN_FLIGHT = 64

JOB_MODES = ("replace", "fail", "isolate", "ignore-dependencies", "ignore-requirements")
KILL_WHOM = ("main", "control", "all")

MANAGER = DBusAddress(MANAGER_PATH, bus_name=SYSTEMD_BUS_NAME, interface=MANAGER_INTERFACE)


class SystemdError(Exception):
    """An error reply: ``name`` is the D-Bus error name, ``message`` its text."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.message = message


# --- object paths ------------------------------------------------------------------


def bus_label_escape(label: str) -> str:
    """systemd's escaping: every byte but [A-Za-z0-9] (and a leading digit) -> ``_xx``."""
    if not label:
        return "_"
    out = []
    for i, byte in enumerate(label.encode()):
        char = chr(byte)
        if ("a" <= char <= "z") or ("A" <= char <= "Z") or (i > 0 and "0" <= char <= "9"):
            out.append(char)
        else:
            out.append(f"_{byte:02x}")
    return "".join(out)


def bus_label_unescape(label: str) -> str:
    if label == "_":
        return ""
    out = bytearray()
    i = 0
    while i < len(label):
        if label[i] == "_" and _is_hex(label[i + 1 : i + 3]):  # else a literal "_"
            out.append(int(label[i + 1 : i + 3], 16))
            i += 3
        else:
            out += label[i].encode()
            i += 1
    return out.decode(errors="replace")


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def unit_path(unit_name: str) -> str:
    """A unit's object path: ``kissbot-hub.service`` -> ``.../unit/kissbot_2dhub_2eservice``."""
    return UNIT_PATH_PREFIX + bus_label_escape(unit_name)


def unit_name_of_path(path: str) -> str | None:
    """The inverse of :func:`unit_path`; None for a path outside the unit namespace."""
    if not path.startswith(UNIT_PATH_PREFIX) or "/" in path[len(UNIT_PATH_PREFIX) :]:
        return None
    return bus_label_unescape(path[len(UNIT_PATH_PREFIX) :])


# --- method calls --------------------------------------------------------------------


def _check_mode(mode: str) -> None:
    if mode not in JOB_MODES:
        raise ValueError(f"{mode!r} is not a job mode (one of: {', '.join(JOB_MODES)})")


def start_transient_unit(name: str, props: Sequence[Property], mode: str = "fail") -> Message:
    """Create and start a unit; ``fail`` refuses to replace a job already queued for it."""
    _check_mode(mode)
    return new_method_call(
        MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))", (name, mode, list(props), [])
    )


def start_unit(name: str, mode: str = "replace") -> Message:
    _check_mode(mode)
    return new_method_call(MANAGER, "StartUnit", "ss", (name, mode))


def restart_unit(name: str, mode: str = "replace") -> Message:
    """Stop (if running, or waiting in auto-restart) and start: the early restart."""
    _check_mode(mode)
    return new_method_call(MANAGER, "RestartUnit", "ss", (name, mode))


def stop_unit(name: str, mode: str = "replace") -> Message:
    _check_mode(mode)
    return new_method_call(MANAGER, "StopUnit", "ss", (name, mode))


def kill_unit(name: str, whom: str, signal: int) -> Message:
    """Send ``signal`` to the unit's ``main`` process, its ``control`` process or ``all``."""
    if whom not in KILL_WHOM:
        raise ValueError(f"{whom!r} is not one of: {', '.join(KILL_WHOM)}")
    return new_method_call(MANAGER, "KillUnit", "ssi", (name, whom, int(signal)))


def reset_failed_unit(name: str) -> Message:
    """Forget the failed state (and the start-limit counter) so the name can be used again."""
    return new_method_call(MANAGER, "ResetFailedUnit", "s", (name,))


def get_unit(name: str) -> Message:
    """The unit's path if it is loaded; NoSuchUnit otherwise."""
    return new_method_call(MANAGER, "GetUnit", "s", (name,))


def get_unit_by_pid(pid: int) -> Message:
    """The path of the unit the process ``pid`` belongs to."""
    return new_method_call(MANAGER, "GetUnitByPID", "u", (pid,))


def load_unit(name: str) -> Message:
    """The unit's path, loading it (from a unit file) if needed."""
    return new_method_call(MANAGER, "LoadUnit", "s", (name,))


def list_units_by_patterns(states: Sequence[str], patterns: Sequence[str]) -> Message:
    """Loaded units whose name matches a glob of ``patterns`` (and a state, if any given)."""
    return new_method_call(MANAGER, "ListUnitsByPatterns", "asas", (list(states), list(patterns)))


def subscribe() -> Message:
    """Ask systemd to emit its signals (JobRemoved, UnitRemoved, PropertiesChanged) to us."""
    return new_method_call(MANAGER, "Subscribe")


def get_all_properties(path: str, interface: str) -> Message:
    address = DBusAddress(path, bus_name=SYSTEMD_BUS_NAME, interface=PROPERTIES_INTERFACE)
    return new_method_call(address, "GetAll", "s", (interface,))


def get_property(path: str, interface: str, name: str) -> Message:
    address = DBusAddress(path, bus_name=SYSTEMD_BUS_NAME, interface=PROPERTIES_INTERFACE)
    return new_method_call(address, "Get", "ss", (interface, name))


def manager_version() -> Message:
    """The manager's ``Version`` property (e.g. "252.39-1~deb12u2"); see :func:`parse_version`."""
    return get_property(MANAGER_PATH, MANAGER_INTERFACE, "Version")


# --- match rules ---------------------------------------------------------------------
#
# The rules carry no sender: on the wire a signal's sender is systemd's unique name
# (":1.3"), never "org.freedesktop.systemd1", so a rule with the well-known name would
# match nothing in a local ``rule.matches(msg)``. :func:`add_match` adds the sender
# for the bus daemon, which resolves the well-known name: only systemd's signals come.


def match_properties_changed() -> MatchRule:
    """PropertiesChanged of every unit (``path_namespace`` = the unit directory)."""
    return MatchRule(
        type="signal",
        interface=PROPERTIES_INTERFACE,
        member="PropertiesChanged",
        path_namespace=UNIT_PATH_PREFIX.rstrip("/"),
    )


def match_job_removed() -> MatchRule:
    return MatchRule(
        type="signal", interface=MANAGER_INTERFACE, member="JobRemoved", path=MANAGER_PATH
    )


def match_unit_removed() -> MatchRule:
    return MatchRule(
        type="signal", interface=MANAGER_INTERFACE, member="UnitRemoved", path=MANAGER_PATH
    )


def add_match(rule: MatchRule, sender: str | None = SYSTEMD_BUS_NAME) -> Message:
    """The bus daemon's AddMatch call for ``rule``, restricted to ``sender``'s signals."""
    return message_bus.AddMatch(match_string(rule, sender))


def match_string(rule: MatchRule, sender: str | None = None) -> str:
    """``rule`` as the bus daemon reads it, with ``sender`` added unless it has one.

    Written here rather than with ``rule.serialise()``: jeepney 0.8 (Debian 12's)
    leaves ``path_namespace`` out, and the rule would then subscribe to every
    PropertiesChanged on the bus. Values are quoted whole; a quote inside one can
    only be written outside quotes, escaped (the D-Bus specification's rule).
    """
    if rule.arg_conditions:
        raise ValueError("argument conditions are not written by match_string")
    fields = dict(rule.header_fields)
    if sender is not None:
        fields.setdefault("sender", sender)
    pairs = [] if rule.message_type is None else [("type", rule.message_type.name)]
    pairs += [
        (k, fields[k])
        for k in ("sender", "interface", "member", "path", "destination")
        if k in fields
    ]
    if rule.path_namespace:
        pairs.append(("path_namespace", rule.path_namespace))
    return ",".join("{}='{}'".format(k, v.replace("'", "'\\''")) for k, v in pairs)


# --- parsers -------------------------------------------------------------------------


@record
class JobRemoved:
    id: int
    job_path: str
    unit: str
    result: str  # done, canceled, timeout, failed, dependency, skipped


@record
class UnitRemoved:
    unit: str
    path: str


@record
class PropertiesChanged:
    path: str  # the unit's object path; unit_name_of_path() gives its name
    interface: str  # org.freedesktop.systemd1.Unit, .Service, ...
    changed: dict[str, Any]  # variants unwrapped
    invalidated: tuple[str, ...]


@record
class UnitInfo:
    """One row of ListUnits/ListUnitsByPatterns."""

    name: str
    description: str
    load_state: str
    active_state: str
    sub_state: str
    following: str
    path: str
    job_id: int
    job_type: str
    job_path: str


def check_reply(msg: Message) -> tuple[Any, ...]:
    """The body of a method return; raises :class:`SystemdError` for an error reply."""
    if msg.header.message_type == MessageType.error:
        name = msg.header.fields.get(HeaderFields.error_name, "")
        text = msg.body[0] if msg.body and isinstance(msg.body[0], str) else ""
        raise SystemdError(str(name), text)
    body: tuple[Any, ...] = tuple(msg.body)
    return body


def _member(msg: Message) -> str | None:
    member = msg.header.fields.get(HeaderFields.member)
    return member if isinstance(member, str) else None


def _signal_body(msg: Message, member: str, signature: str) -> tuple[Any, ...]:
    if msg.header.message_type != MessageType.signal or _member(msg) != member:
        raise ValueError(f"not a {member} signal: {msg!r}")
    actual = msg.header.fields.get(HeaderFields.signature, "")
    if actual != signature:
        raise ValueError(f"{member} with signature {actual!r}, expected {signature!r}")
    return tuple(msg.body)


def unwrap(variant: Any) -> Any:
    """A jeepney variant ``(signature, value)`` -> the value; nested variants too."""
    sig, value = variant
    if sig == "v":
        return unwrap(value)
    return value


def parse_object_path(reply: Message) -> str:
    """The ``o`` returned by Start*/Stop*/Restart* (the job) or GetUnit/LoadUnit (the unit)."""
    (path,) = check_reply(reply)
    return str(path)


def parse_job_removed(msg: Message) -> JobRemoved:
    job_id, job_path, unit, result = _signal_body(msg, "JobRemoved", "uoss")
    return JobRemoved(int(job_id), str(job_path), str(unit), str(result))


def parse_unit_removed(msg: Message) -> UnitRemoved:
    unit, path = _signal_body(msg, "UnitRemoved", "so")
    return UnitRemoved(str(unit), str(path))


def parse_properties_changed(msg: Message) -> PropertiesChanged:
    interface, changed, invalidated = _signal_body(msg, "PropertiesChanged", "sa{sv}as")
    path = msg.header.fields.get(HeaderFields.path, "")
    return PropertiesChanged(
        path=str(path),
        interface=str(interface),
        changed={str(k): unwrap(v) for k, v in changed.items()},
        invalidated=tuple(invalidated),
    )


def parse_get_all(reply: Message) -> dict[str, Any]:
    (props,) = check_reply(reply)
    return {str(k): unwrap(v) for k, v in props.items()}


def parse_get(reply: Message) -> Any:
    (variant,) = check_reply(reply)
    return unwrap(variant)


def parse_list_units(reply: Message) -> list[UnitInfo]:
    (rows,) = check_reply(reply)
    return [
        UnitInfo(
            name=row[0],
            description=row[1],
            load_state=row[2],
            active_state=row[3],
            sub_state=row[4],
            following=row[5],
            path=row[6],
            job_id=int(row[7]),
            job_type=row[8],
            job_path=row[9],
        )
        for row in rows
    ]


_VERSION_RE = re.compile(r"\s*v?(\d+)")


def parse_version_text(text: str) -> int:
    """The major version of a manager ``Version`` string ("252.39-1~deb12u2" -> 252)."""
    match = _VERSION_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a systemd version")
    return int(match[1])


def parse_version(reply: Message) -> int:
    value = parse_get(reply)
    if not isinstance(value, str):
        raise ValueError(f"Version is {value!r}, expected a string")
    return parse_version_text(value)
