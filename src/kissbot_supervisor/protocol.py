"""The control protocol between ``kissbotctl`` and the supervisor: pure, no I/O.

Transport: a Unix stream socket; UTF-8 JSON, one object per line; each request
is answered by exactly one response line; a connection may carry several
requests.

Requests::

    {"cmd": "status"}
    {"cmd": "start" | "stop" | "restart", "names": [NAME, ...], "progress": BOOL}
    {"cmd": "restart", "names": [NAME, ...], "progress": BOOL, "rolling": N}
    {"cmd": "reload"}
    {"cmd": "metrics"}
    {"cmd": "events"}

A NAME is a channel login, ``hub`` or ``all``; the supervisor matches
channels case-insensitively, as Twitch does.

``start``, ``stop`` and ``restart`` are answered once the named processes
have settled, which may take a while (a bot's ``start_timeout_sec``). With
``"progress": true`` (optional, default false) the supervisor first says how
long it will wait, then reports each process as it settles, in lines of their
own before the response::

    {"progress": {"wait_sec": SECONDS, "waiting": [NAME, ...], "done": [RESULT, ...]}}

``rolling`` (optional, restart only, an integer from 1): at most N of the
named bots are down at once; the next is stopped once one is ready again or
has failed. Without it a restart of many bots is rolling all the same, under
Twitch's login limit only. A supervisor older than this field refuses the
request as a whole (``unknown key 'rolling'``): nothing is restarted.

``wait_sec`` is how long from now the supervisor may still wait before it
answers with the state so far: a client waits that long (plus its own margin
for the answer to travel), not a guess of its own. ``waiting`` lists the names
not settled yet, ``done`` the results that settled since the last such line
(the first one's is empty), shaped like the entries of the final ``results``.

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

The STATUS object (the answer to ``status``) is defined in :mod:`.status`.

This module builds and checks messages; the daemon and :mod:`.client` move the
bytes. It imports only ``json`` (and our names) so that ``kissbotctl`` starts fast.
"""

from __future__ import annotations

import json
from enum import StrEnum

from .kissbot.names import process_name, unknown_names_text

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: kissbotctl start-up cost
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any


__all__ = [
    "ALARMS",
    "ALL",
    "COMMANDS",
    "EVENT_KEYS",
    "MAX_LINE",
    "MAX_NAMES",
    "MAX_RESPONSE",
    "NAMED_COMMANDS",
    "PROGRESS",
    "ROLLING",
    "NoteKind",
    "ProtocolError",
    "Request",
    "UnknownNameError",
    "build_request",
    "encode",
    "error_response",
    "is_progress",
    "parse_event",
    "parse_request",
    "parse_response",
    "progress_message",
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


class NoteKind(StrEnum):
    """What happened: an EVENT's ``kind``, and the kind of the core's notes."""

    STARTED = "started"
    READY = "ready"
    ADOPTED = "adopted"
    ADDED = "added"
    EXITED = "exited"
    BACKOFF = "backoff"
    RESTARTING = "restarting"
    CHANGED = "changed"
    SHUTDOWN = "shutdown"
    PARKED = "parked"
    WATCHDOG = "watchdog"
    MEMORY = "memory"
    START_TIMEOUT = "start-timeout"
    SPAWN_FAILED = "spawn-failed"
    KILL = "kill"
    BLOCKED = "blocked"
    COMMAND = "command"
    STOPPED = "stopped"
    REMOVED = "removed"
    FINISHED = "finished"
    FAILING_ALIKE = "failing-alike"
    STALLED = "stalled"


# The kinds that need an operator's eye: logged as warnings, shown in red.
ALARMS = frozenset(
    {
        NoteKind.PARKED,
        NoteKind.WATCHDOG,
        NoteKind.MEMORY,
        NoteKind.START_TIMEOUT,
        NoteKind.SPAWN_FAILED,
        NoteKind.KILL,
        NoteKind.BLOCKED,
        NoteKind.FAILING_ALIKE,
        NoteKind.STALLED,
    }
)
ROLLING = "rolling"
_KEYS = ("cmd", "names", "progress", ROLLING)
# The key of the lines that come before the answer of a command that waits.
PROGRESS = "progress"
_EXPECTED_CMD = "one of: " + ", ".join(COMMANDS)
_NAMES_RULE = "a list of channel logins, 'hub' or 'all'"

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
        super().__init__(unknown_names_text(self.unknown, self.known))


class Request:
    """One parsed, valid request. ``names`` is empty for ``status`` and ``reload``; they
    are the processes' own (``El_Serda`` becomes ``el_serda``: Twitch logins are
    case-insensitive), whoever builds the request (the socket, KissBot's files).

    ``progress``: the client wants progress lines before the answer (start,
    stop, restart only). ``rolling``: restart only, at most that many of the
    named bots down at once (0: no such limit).

    A small hand-written value class rather than a dataclass: ``dataclasses``
    pulls in ``inspect``, which would double kissbotctl's import time.
    """

    __slots__ = ("cmd", "names", "progress", "rolling")

    cmd: str
    names: tuple[str, ...]
    progress: bool
    rolling: int

    def __init__(
        self, cmd: str, names: Iterable[str] = (), progress: bool = False, rolling: int = 0
    ) -> None:
        object.__setattr__(self, "cmd", cmd)
        object.__setattr__(self, "names", tuple(process_name(n) for n in names))
        object.__setattr__(self, "progress", progress)
        object.__setattr__(self, "rolling", rolling)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Request is immutable (cannot set {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.cmd, self.names, self.progress, self.rolling) == (
            other.cmd,
            other.names,
            other.progress,
            other.rolling,
        )

    def __hash__(self) -> int:
        return hash((self.cmd, self.names, self.progress, self.rolling))

    def __repr__(self) -> str:
        extra = ", progress=True" if self.progress else ""
        extra += f", rolling={self.rolling}" if self.rolling else ""
        return f"Request(cmd={self.cmd!r}, names={self.names!r}{extra})"

    def to_obj(self) -> dict[str, Any]:
        """The request as the JSON object sent on the wire."""
        if self.cmd in NAMED_COMMANDS:
            obj: dict[str, Any] = {"cmd": self.cmd, "names": list(self.names)}
            if self.progress:
                obj[PROGRESS] = True
            if self.rolling:
                obj[ROLLING] = self.rolling
            return obj
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
        for key in ("names", PROGRESS, ROLLING):
            if key in obj:
                raise ProtocolError(f'{cmd!r} takes no "{key}"')
        return Request(cmd)
    progress = obj.get(PROGRESS, False)
    if not isinstance(progress, bool):
        raise ProtocolError(f'"{PROGRESS}" must be true or false; got {_type_name(progress)}')
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
    rolling = obj.get(ROLLING, 0)
    if ROLLING in obj:
        if cmd != "restart":
            raise ProtocolError(f'{cmd!r} takes no "{ROLLING}" (only restart is rolling)')
        whole = isinstance(rolling, int) and not isinstance(rolling, bool)
        if not whole or rolling < 1:
            shown = str(rolling) if whole else _type_name(rolling)
            raise ProtocolError(
                f'"{ROLLING}" must be a whole number of bots, 1 or more; got {shown}'
            )
    return Request(cmd, names, progress, rolling)


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


def build_request(
    cmd: str, names: Sequence[str] = (), progress: bool = False, rolling: int | None = None
) -> dict[str, Any]:
    """The wire object for a request, checked by the same rules the daemon applies."""
    obj: dict[str, Any] = {"cmd": cmd}
    if cmd in NAMED_COMMANDS or names:
        obj["names"] = list(names)
    if progress:
        obj[PROGRESS] = True
    if rolling is not None:
        obj[ROLLING] = rolling
    return _validate(obj).to_obj()


def progress_message(
    wait_sec: float, waiting: Sequence[str], done: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """A progress line's object (see the module's documentation)."""
    return {
        PROGRESS: {"wait_sec": round(wait_sec, 3), "waiting": list(waiting), "done": list(done)}
    }


def is_progress(message: Mapping[str, Any]) -> bool:
    """Whether a message is a progress line, not the answer itself."""
    return PROGRESS in message and "ok" not in message


def encode(obj: Mapping[str, Any]) -> bytes:
    """One message as compact UTF-8 JSON and a newline."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def error_response(message: str) -> dict[str, Any]:
    """The ``{"ok": false, "error": ...}`` response."""
    return {"ok": False, "error": message}


def parse_response(line: bytes, *, progress: bool = False) -> dict[str, Any]:
    """Decode one response line; raise :class:`ProtocolError` unless it is an object with ``ok``.

    An ``ok: false`` response is returned, not raised: it is a valid answer.
    With ``progress`` (a request that asked for it), a progress line is returned
    too, once checked (:func:`is_progress` tells it from the answer).
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
    if progress and is_progress(obj):
        return _checked_progress(obj)
    if not isinstance(obj.get("ok"), bool):
        raise ProtocolError('the supervisor\'s answer has no boolean "ok"')
    if obj["ok"] is False and not isinstance(obj.get("error"), str):
        raise ProtocolError('the supervisor\'s error answer has no "error" text')
    return obj


def _checked_progress(obj: dict[str, Any]) -> dict[str, Any]:
    body = obj[PROGRESS]
    ok = (
        isinstance(body, dict)
        and isinstance(body.get("wait_sec"), (int, float))
        and not isinstance(body.get("wait_sec"), bool)
        and isinstance(body.get("waiting"), list)
        and isinstance(body.get("done"), list)
        and all(isinstance(r, dict) for r in body["done"])
    )
    if not ok:
        raise ProtocolError(
            "the supervisor sent a progress line without a number wait_sec and the lists "
            "waiting and done"
        )
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
