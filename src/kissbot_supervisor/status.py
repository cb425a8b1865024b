"""The STATUS object, the answer to ``status``: defined once, built one way, read here.

Its keys (:data:`STATUS_KEYS`, :data:`PROCESS_KEYS`, ...) are documented in
docs/operations.md and stable; their types are declared for the type checker
(:class:`Status` and the entries it holds; nothing of ``typing`` at run time).
Both producers build it with :func:`process_entry` and :func:`status_object`:
the daemon (``daemon/status.py``), and ``kissbotctl`` reading systemd while
the supervisor is down (``cli/offline.py``, ``"source": "systemd"``). The
readers (:func:`exit_code_for_status`, :func:`filter_status`) serve kissbotctl.
"""

from __future__ import annotations

from .kissbot.names import HUB, process_name
from .protocol import ALL, EXIT_NOT_ALL_RUNNING, EXIT_OK, UnknownNameError

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
        since: float | None  # Unix time it entered its state; None: not known
        argv: list[str] | None  # its command line; None: not known (read from systemd)
        exits: list[ExitEntry]  # its last few exits, oldest first
        channel: NotRequired[str]  # bots
        socket: NotRequired[str]  # the hub, from the supervisor
        unit: NotRequired[str]  # read from systemd (offline)
        active_state: NotRequired[str]
        sub_state: NotRequired[str]

    class ExitEntry(TypedDict):
        """One exit of a process: when (Unix time), and how, in the core's words."""

        time: float
        exit: str

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


# The STATUS object's keys, in order (documented in docs/operations.md, stable).
STATUS_KEYS = ("backend", "supervisor", "hub", "bots")  # + "source" when read offline
PROCESS_KEYS = (
    "name", "state", "want", "pid", "uptime_s", "restarts", "rss_bytes",
    "last_exit", "token_state", "reason", "status_text", "since", "argv", "exits",
)  # fmt: skip
EXIT_KEYS = ("time", "exit")  # of each entry of a process's "exits"
SYSTEMD_UNIT_KEYS = ("unit", "active_state", "sub_state")  # process entries read offline
LIVE_SUPERVISOR_KEYS = (
    "pid", "uptime_s", "version", "config", "workdir", "control_socket", "logs_dir",
    "rss_bytes", "summary",
)  # fmt: skip
OFFLINE_SUPERVISOR_KEYS = ("running", "unit", "active_state", "sub_state")
OFFLINE_SOURCE = "systemd"  # "source" of a STATUS object read from systemd
# A process's ``state``: the core's phases (core.Phase, held to this by a unit test;
# the core is not imported here, kissbotctl's start-up cost), in the order the
# status header counts them.
STATES = ("running", "starting", "stopping", "backoff", "failed", "stopped")
# ``status --sort state``: what needs an operator's eye first. A stopped process
# comes before the running ones: wanted, it is blocked (a token) or waiting.
TROUBLE_ORDER = ("failed", "backoff", "starting", "stopping", "stopped", "running")


class UnknownStateError(ValueError):
    """``status --state`` named a state no process can be in."""

    def __init__(self, unknown: Sequence[str]) -> None:
        import difflib

        hints = []
        for word in unknown:
            close = difflib.get_close_matches(word, STATES, n=1, cutoff=0.6)
            hints.append(f"{word!r} (did you mean {close[0]}?)" if close else repr(word))
        noun = "state" if len(unknown) == 1 else "states"
        super().__init__(f"unknown {noun} {', '.join(hints)}; the states are {', '.join(STATES)}")
        self.unknown = tuple(unknown)


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
            keys.add(process_name(value))
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
    wanted = [process_name(n) for n in names]
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


def parse_states(text: str) -> tuple[str, ...]:
    """``"Failed, backoff"`` as ``("failed", "backoff")``: comma-separated, any case,
    each once. Raises :class:`UnknownStateError` naming the valid states."""
    words = [w.strip().lower() for w in text.split(",")]
    states = tuple(dict.fromkeys(w for w in words if w))
    unknown = [w for w in states if w not in STATES]
    if unknown or not states:
        raise UnknownStateError(unknown or [text])
    return states


def filter_states(status: Mapping[str, Any], states: Iterable[str]) -> dict[str, Any]:
    """A copy of ``status`` with only the processes in one of ``states``.

    The hub's entry is removed when its state is not among them (as when not
    asked for by name); ``bots`` stays, possibly empty, where it was.
    """
    wanted = set(states)
    result = dict(status)
    hub = result.get("hub")
    if isinstance(hub, dict) and hub.get("state") not in wanted:
        result.pop("hub")
    if "bots" in result:
        bots = [b for b in result.get("bots") or [] if isinstance(b, dict)]
        result["bots"] = [b for b in bots if b.get("state") in wanted]
    return result


def state_counts(procs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many of ``procs`` are in each state, in :data:`STATES` order, zeros left out;
    a state that is none of those (a newer supervisor's) comes last, as it is."""
    counts: dict[str, int] = {}
    for proc in procs:
        state = str(proc.get("state"))
        counts[state] = counts.get(state, 0) + 1
    known = {s: counts.pop(s) for s in STATES if s in counts}
    return known | counts


def troubled_first(status: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``status`` with its bots in :data:`TROUBLE_ORDER` (failed first),
    config order kept within a state; an unknown state sorts with the troubled."""
    result = dict(status)
    if isinstance(result.get("bots"), list):
        rank = {s: i for i, s in enumerate(TROUBLE_ORDER)}
        result["bots"] = sorted(
            (b for b in result["bots"] if isinstance(b, dict)),
            key=lambda b: rank.get(str(b.get("state")), -1),
        )
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
    since: float | None,
    argv: Sequence[str] | None,
    exits: Sequence[ExitEntry],
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
        "since": None if since is None else round(since, 3),
        "argv": None if argv is None else list(argv),
        "exits": [{"time": e["time"], "exit": e["exit"]} for e in exits],
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
