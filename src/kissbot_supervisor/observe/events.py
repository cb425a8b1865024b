"""What the outside sees of a core Note: the EVENT object and the ``on_failure`` environment.

Pure: the daemon hands in the core, the note and the wall-clock time. The
EVENT object is the one :mod:`.protocol` documents (its keys are
``protocol.EVENT_KEYS``); the hook's environment is built from scratch, never
from the supervisor's own, so no token, Fernet key or inherited secret can
reach the hook.
"""

from __future__ import annotations

from ..core import HUB
from ..protocol import NoteKind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

    from ..core import Core

# The Notes that run the on_failure hook: every failure the core counts ends in
# exactly one of them (a crash, a failed spawn, a start or watchdog timeout puts
# the process in backoff, or parks it when it has failed too often). A clean
# exit that is not restarted, an operator's stop, and a Note about a restart
# someone asked for are not failures.
HOOK_KINDS = frozenset({NoteKind.BACKOFF, NoteKind.PARKED})

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def event_object(core: Core, name: str, kind: str, message: str, wall: float) -> dict[str, Any]:
    """The EVENT for one Note, with the process's state, PID and restarts right after it.

    ``state``, ``pid`` and ``restarts`` are ``null`` for ``supervisor`` and for a
    process a reload has already removed from the fleet.
    """
    proc = core.procs.get(name)
    return {
        "time": round(wall, 6),
        "name": name,
        "kind": kind,
        "message": message,
        "state": None if proc is None else str(core.shown_state(proc)),
        "pid": None if proc is None else proc.pid,
        "restarts": None if proc is None else proc.restarts,
    }


def hook_environment(
    core: Core,
    name: str,
    kind: str,
    message: str,
    workdir: Path,
    inherited: Mapping[str, str],
) -> dict[str, str]:
    """The whole environment of an ``on_failure`` run: PATH and LANG from ``inherited``,
    the rest describes the failure. ``KISSBOT_PID`` is the PID that failed (empty when
    the process never started)."""
    proc = core.procs.get(name)
    env = {
        "PATH": inherited.get("PATH") or DEFAULT_PATH,
        "LANG": inherited.get("LANG") or "C.UTF-8",
        "KISSBOT_EVENT": kind,
        "KISSBOT_NAME": name,
        "KISSBOT_CHANNEL": "" if name == HUB else name,
        "KISSBOT_REASON": message,
        "KISSBOT_STATE": "" if proc is None else str(core.shown_state(proc)),
        "KISSBOT_PID": "" if proc is None or proc.last_pid is None else str(proc.last_pid),
        "KISSBOT_RESTARTS": "0" if proc is None else str(proc.restarts),
        "KISSBOT_LAST_EXIT": "" if proc is None else proc.last_exit or "",
        # Its own last output line at that exit, quoted (native backend; else empty).
        "KISSBOT_LAST_LINE": "" if proc is None else proc.last_words or "",
        "KISSBOT_WORKDIR": str(workdir),
    }
    # A NUL cannot be passed to exec; messages are ours, but the exit text quotes errors.
    return {k: v.replace("\0", "") for k, v in env.items()}
