"""The control protocol between ``kissbotctl`` and the supervisor: pure, no I/O.

Transport: a Unix stream socket; UTF-8 JSON, one object per line; each request
is answered by exactly one response line; a connection may carry several
requests.

Requests::

    {"cmd": "status"}
    {"cmd": "start" | "stop" | "restart", "names": [NAME, ...]}
    {"cmd": "reload"}
    {"cmd": "metrics"}
    {"cmd": "events"}

A NAME is a channel login, ``hub`` or ``all``.

Responses are ``{"ok": true, ...}`` (``status``; ``results``; ``changes``;
``metrics``, the Prometheus text exposition as one string) or
``{"ok": false, "error": "one clear sentence"}``.

``events`` subscribes the connection to the supervisor's state changes: the
answer is ``{"ok": true, "subscribed": true}``, then one line per event,
``{"event": EVENT}``, until the client hangs up; the connection carries
nothing else. EVENT has the stable keys ``time`` (Unix seconds, float),
``name`` (``hub``, a channel or ``supervisor``), ``kind`` (what happened:
``started``, ``ready``, ``exited``, ``parked``, ``watchdog``, ...), ``message``
(one line for humans), ``state`` and ``pid`` (the process's state and PID
right after the event) and ``restarts``; all three are ``null`` for ``supervisor``
and for a process a reload has removed. What a subscribed client sends is
ignored; one that leaves ``control.MAX_PENDING_OUT`` bytes unread is
disconnected (the kinds are listed in docs/operations.md).

The STATUS object (the answer to ``status``) is defined here once: its keys
(:data:`STATUS_KEYS`, :data:`PROCESS_KEYS`, ...), their types for the type
checker (:class:`Status` and the entries it holds) and the two functions that
build it (:func:`process_entry`, :func:`status_object`), which both producers
use: the daemon, and ``kissbotctl`` reading systemd while the supervisor is
down (``"source": "systemd"``).

This module builds and checks messages; the daemon and :mod:`.client` move the
bytes. It imports only ``json`` (and our names) so that ``kissbotctl`` starts fast.
"""

from __future__ import annotations

import json

from .core.names import HUB

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: kissbotctl start-up cost
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any, NotRequired, TypedDict

    class ProcessEntry(TypedDict):
        """One process: the hub, or a bot (which adds ``channel``)."""

        name: str
        state: str  # running starting stopping stopped backoff failed
        want: bool  # someone wants it running (false: stopped on purpose)
        pid: int | None
        uptime_s: float | None
        restarts: int
        rss_bytes: int | None
        last_exit: str | None
        token_state: str | None
        reason: str | None
        status_text: str | None  # the process's own STATUS= line
        channel: NotRequired[str]  # bots
        socket: NotRequired[str]  # the hub, from the supervisor
        unit: NotRequired[str]  # read from systemd (offline)
        active_state: NotRequired[str]
        sub_state: NotRequired[str]

    class SupervisorInfo(TypedDict, total=False):
        pid: int
        uptime_s: float
        version: str
        config: str
        workdir: str
        control_socket: str
        logs_dir: str
        rss_bytes: int | None
        summary: str
        # read from systemd (offline): the supervisor's own unit
        running: bool
        unit: str | None
        active_state: str
        sub_state: str

    class Status(TypedDict):
        backend: str
        source: NotRequired[str]  # "systemd" when read from systemd, not the supervisor
        supervisor: SupervisorInfo
        hub: ProcessEntry | None
        bots: list[ProcessEntry]


__all__ = [
    "ALL",
    "COMMANDS",
    "EVENT_KEYS",
    "LIVE_SUPERVISOR_KEYS",
    "MAX_LINE",
    "MAX_NAMES",
    "MAX_RESPONSE",
    "NAMED_COMMANDS",
    "OFFLINE_SOURCE",
    "OFFLINE_SUPERVISOR_KEYS",
    "PROCESS_KEYS",
    "STATUS_KEYS",
    "SYSTEMD_UNIT_KEYS",
    "ProtocolError",
    "Request",
    "UnknownNameError",
    "build_request",
    "encode",
    "error_response",
    "exit_code_for_status",
    "filter_status",
    "parse_event",
    "parse_request",
    "parse_response",
    "process_entry",
    "status_object",
]

# A request line, newline included, is at most this many bytes.
MAX_LINE = 64 * 1024
# A response can be far longer than a request (the status of 1000 bots).
MAX_RESPONSE = 16 * 1024 * 1024
MAX_NAMES = 1000

ALL = "all"
NAMED_COMMANDS = ("start", "stop", "restart")
COMMANDS = ("status", *NAMED_COMMANDS, "reload", "metrics", "events")
# The keys of an EVENT object, in order (documented, stable).
EVENT_KEYS = ("time", "name", "kind", "message", "state", "pid", "restarts")
_KEYS = ("cmd", "names")
_EXPECTED_CMD = "one of: " + ", ".join(COMMANDS)
_NAMES_RULE = "a list of channel logins, 'hub' or 'all'"

# The STATUS object's keys, in order (documented in docs/operations.md, stable).
STATUS_KEYS = ("backend", "supervisor", "hub", "bots")  # + "source" when read offline
PROCESS_KEYS = (
    "name", "state", "want", "pid", "uptime_s", "restarts", "rss_bytes",
    "last_exit", "token_state", "reason", "status_text",
)  # fmt: skip
SYSTEMD_UNIT_KEYS = ("unit", "active_state", "sub_state")  # process entries read offline
LIVE_SUPERVISOR_KEYS = (
    "pid", "uptime_s", "version", "config", "workdir", "control_socket", "logs_dir",
    "rss_bytes", "summary",
)  # fmt: skip
OFFLINE_SUPERVISOR_KEYS = ("running", "unit", "active_state", "sub_state")
OFFLINE_SOURCE = "systemd"  # "source" of a STATUS object read from systemd

# Exit codes shared by kissbotctl and anything else that reports a status.
EXIT_OK = 0
EXIT_NOT_ALL_RUNNING = 3


class ProtocolError(ValueError):
    """A message broke the protocol; ``message`` is one sentence saying what was expected."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownNameError(ValueError):
    """Names that match no process in a STATUS object."""

    def __init__(self, unknown: Sequence[str], known: Sequence[str]) -> None:
        self.unknown = tuple(unknown)
        self.known = tuple(known)
        listed = ", ".join(repr(n) for n in self.unknown)
        noun = "channel" if len(self.unknown) == 1 else "channels"
        known_text = ", ".join(self.known) if self.known else "none"
        super().__init__(f"unknown {noun} {listed} (known: {known_text})")


class Request:
    """One parsed, valid request. ``names`` is empty for ``status`` and ``reload``.

    A small hand-written value class rather than a dataclass: ``dataclasses``
    pulls in ``inspect``, which would double kissbotctl's import time.
    """

    __slots__ = ("cmd", "names")

    cmd: str
    names: tuple[str, ...]

    def __init__(self, cmd: str, names: Iterable[str] = ()) -> None:
        object.__setattr__(self, "cmd", cmd)
        object.__setattr__(self, "names", tuple(names))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Request is immutable (cannot set {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.cmd, self.names) == (other.cmd, other.names)

    def __hash__(self) -> int:
        return hash((self.cmd, self.names))

    def __repr__(self) -> str:
        return f"Request(cmd={self.cmd!r}, names={self.names!r})"

    def to_obj(self) -> dict[str, Any]:
        """The request as the JSON object sent on the wire."""
        if self.cmd in NAMED_COMMANDS:
            return {"cmd": self.cmd, "names": list(self.names)}
        return {"cmd": self.cmd}


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _validate(obj: object) -> Request:
    """Check a decoded request object; the single rule book for parse and build."""
    if not isinstance(obj, dict):
        raise ProtocolError(
            f'a request must be a JSON object like {{"cmd": "status"}}, not {_type_name(obj)}'
        )
    for key in obj:
        if key not in _KEYS:
            raise ProtocolError(f"unknown key {key!r} in the request (allowed: {', '.join(_KEYS)})")
    if "cmd" not in obj:
        raise ProtocolError(f'the request has no "cmd" (expected {_EXPECTED_CMD})')
    cmd = obj["cmd"]
    if not isinstance(cmd, str):
        raise ProtocolError(f'"cmd" must be a string, {_EXPECTED_CMD}; got {_type_name(cmd)}')
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {cmd!r} (expected {_EXPECTED_CMD})")
    if cmd not in NAMED_COMMANDS:
        if "names" in obj:
            raise ProtocolError(f'{cmd!r} takes no "names"')
        return Request(cmd)
    if "names" not in obj:
        raise ProtocolError(f'{cmd!r} needs "names": {_NAMES_RULE}')
    names = obj["names"]
    if not isinstance(names, list):
        raise ProtocolError(f'"names" must be {_NAMES_RULE}; got {_type_name(names)}')
    if not names:
        raise ProtocolError(f'"names" is empty; {cmd!r} needs at least one name')
    if len(names) > MAX_NAMES:
        raise ProtocolError(f'"names" has {len(names)} entries; at most {MAX_NAMES} are allowed')
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name:
            got = "an empty string" if name == "" else _type_name(name)
            raise ProtocolError(f'"names"[{index}] must be a non-empty string; got {got}')
    return Request(cmd, names)


def parse_request(line: bytes) -> Request:
    """Parse one request line (its trailing newline optional) or raise :class:`ProtocolError`."""
    if len(line) > MAX_LINE:
        raise ProtocolError(
            f"the request is {len(line)} bytes long; the limit is {MAX_LINE} bytes per line"
        )
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"the request is not valid UTF-8 (byte 0x{line[exc.start]:02x} at offset "
            f"{exc.start}); send UTF-8 JSON"
        ) from None
    text = text.rstrip("\r\n")
    if not text.strip():
        raise ProtocolError('the request is empty; expected a JSON object like {"cmd": "status"}')
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"the request is not valid JSON ({exc.msg} at column {exc.colno}); "
            'expected one object like {"cmd": "status"} per line'
        ) from None
    except RecursionError:
        raise ProtocolError("the request is nested too deeply to be a valid request") from None
    return _validate(obj)


def build_request(cmd: str, names: Sequence[str] = ()) -> dict[str, Any]:
    """The wire object for a request, checked by the same rules the daemon applies."""
    obj: dict[str, Any] = {"cmd": cmd}
    if cmd in NAMED_COMMANDS or names:
        obj["names"] = list(names)
    return _validate(obj).to_obj()


def encode(obj: Mapping[str, Any]) -> bytes:
    """One message as compact UTF-8 JSON and a newline."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def error_response(message: str) -> dict[str, Any]:
    """The ``{"ok": false, "error": ...}`` response."""
    return {"ok": False, "error": message}


def parse_response(line: bytes) -> dict[str, Any]:
    """Decode one response line; raise :class:`ProtocolError` unless it is an object with ``ok``.

    An ``ok: false`` response is returned, not raised: it is a valid answer.
    """
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError("the supervisor's answer is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"the supervisor's answer is not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    except RecursionError:
        raise ProtocolError("the supervisor's answer is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"the supervisor's answer is {_type_name(obj)}, not a JSON object")
    if not isinstance(obj.get("ok"), bool):
        raise ProtocolError('the supervisor\'s answer has no boolean "ok"')
    if obj["ok"] is False and not isinstance(obj.get("error"), str):
        raise ProtocolError('the supervisor\'s error answer has no "error" text')
    return obj


def parse_event(line: bytes) -> dict[str, Any]:
    """Decode one line of an ``events`` stream: the EVENT object, or raise :class:`ProtocolError`.

    An ``{"ok": false, ...}`` line (the supervisor ending the stream with an
    error) raises with its error text.
    """
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ProtocolError("the supervisor sent an event line that is not valid JSON") from None
    if isinstance(obj, dict) and obj.get("ok") is False and isinstance(obj.get("error"), str):
        raise ProtocolError(obj["error"])
    event = obj.get("event") if isinstance(obj, dict) else None
    if not isinstance(event, dict) or not all(key in event for key in EVENT_KEYS):
        raise ProtocolError(
            "the supervisor sent an event line without an event object "
            f"(expected the keys {', '.join(EVENT_KEYS)})"
        )
    return event


# --- reading STATUS objects -----------------------------------------------


def _processes(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    procs: list[Mapping[str, Any]] = []
    hub = status.get("hub")
    if isinstance(hub, dict):
        procs.append(hub)
    bots = status.get("bots")
    if isinstance(bots, list):
        procs.extend(b for b in bots if isinstance(b, dict))
    return procs


def exit_code_for_status(status: Mapping[str, Any]) -> int:
    """0 when every process with ``want`` true is running, else 3.

    A process nobody wants running (stopped on purpose) does not count. A status
    with no processes at all is 0: nothing wanted, nothing missing.
    """
    for proc in _processes(status):
        if proc.get("want") is True and proc.get("state") != "running":
            return EXIT_NOT_ALL_RUNNING
    return EXIT_OK


def _bot_keys(bot: Mapping[str, Any]) -> set[str]:
    keys = set()
    for field in ("name", "channel"):
        value = bot.get(field)
        if isinstance(value, str):
            keys.add(value.lower())
    return keys


def filter_status(status: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A copy of ``status`` limited to ``names`` (channel logins, ``hub``, ``all``).

    No names, or ``all`` among them, keeps everything. Otherwise the bots keep
    only those whose channel or name matches (case-insensitively), and the
    ``hub`` key is kept only when ``hub`` is named (it is then ``None`` if the
    hub is disabled) and is removed otherwise, so a reader can tell "not
    asked for" from "disabled"; likewise the ``bots`` key is removed when
    only ``hub`` is named. Raises :class:`UnknownNameError` for names that
    match nothing.
    """
    result = dict(status)
    wanted = [n.lower() for n in names]
    if not wanted or ALL in wanted:
        return result
    bots = [b for b in status.get("bots") or [] if isinstance(b, dict)]
    known: set[str] = {HUB}
    for bot in bots:
        known |= _bot_keys(bot)
    unknown = [n for n, w in zip(names, wanted, strict=True) if w not in known]
    if unknown:
        channels = sorted({b["channel"] for b in bots if isinstance(b.get("channel"), str)})
        raise UnknownNameError(unknown, channels)
    if set(wanted) == {HUB}:
        result.pop("bots", None)  # only the hub was asked for: no bot table at all
    else:
        result["bots"] = [b for b in bots if _bot_keys(b) & set(wanted)]
    if HUB not in wanted:
        result.pop("hub", None)
    return result


# --- building STATUS objects: the one way, for both producers ------------------


def process_entry(
    name: str,
    *,
    state: str,
    want: bool,
    pid: int | None,
    uptime_s: float | None,
    restarts: int,
    rss_bytes: int | None,
    last_exit: str | None,
    token_state: str | None,
    reason: str | None,
    status_text: str | None,
) -> ProcessEntry:
    """One process's entry, with :data:`PROCESS_KEYS` in order; the caller adds
    ``socket`` (the hub) or the :data:`SYSTEMD_UNIT_KEYS` (read from systemd)."""
    return {
        "name": name,
        "state": state,
        "want": want,
        "pid": pid,
        "uptime_s": None if uptime_s is None else round(uptime_s, 3),
        "restarts": restarts,
        "rss_bytes": rss_bytes,
        "last_exit": last_exit,
        "token_state": token_state,
        "reason": reason,
        "status_text": status_text,
    }


def status_object(
    backend: str,
    supervisor: SupervisorInfo,
    processes: Iterable[ProcessEntry],
    *,
    source: str | None = None,
) -> Status:
    """The STATUS object: the hub's entry apart, each bot's with ``channel`` first."""
    hub: ProcessEntry | None = None
    bots: list[ProcessEntry] = []
    for entry in processes:
        if entry["name"] == HUB:
            hub = entry
        else:
            bots.append({"channel": entry["name"], **entry})
    status: Status = {"backend": backend, "supervisor": supervisor, "hub": hub, "bots": bots}
    if source is not None:
        status = {"backend": backend, "source": source, **status}
    return status
