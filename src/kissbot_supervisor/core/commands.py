"""Operator commands that wait for their outcome, as ``systemctl start`` waits for its job.

``start`` answers once the process is ready (or has failed, or may not start),
``stop`` once it is gone, ``restart`` once a new incarnation is ready. These
functions only read the core's state; the daemon asks them after each event.
"""

from __future__ import annotations

from .. import core
from .records import record

# typing is imported for the type checker only (it costs the daemon 0.4 MiB).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


@record
class Before:
    """What a process looked like when the command arrived."""

    phase: core.Phase
    pid: int | None


def settled(cmd: str, p: core.Proc | None, before: Before) -> bool:
    if p is None:
        return True  # removed by a reload meanwhile
    if cmd == "stop":
        return p.pid is None and not p.spawning
    if p.phase is core.Phase.RUNNING:
        return cmd == "start" or p.pid != before.pid
    if p.phase in (core.Phase.FAILED, core.Phase.BACKOFF):
        return True
    return p.phase is core.Phase.STOPPED and not p.spawning and (bool(p.blocked) or not p.want)


def result(cmd: str, name: str, p: core.Proc | None, before: Before) -> dict[str, Any]:
    """One entry of the reply's ``results``: ``ok`` says whether the wish holds."""
    if p is None:
        return {"name": name, "ok": True, "result": "removed", "pid": None, "state": "stopped"}
    ok = False
    if cmd == "stop":
        ok = p.pid is None
        text = "not running" if before.pid is None else ("stopped" if ok else "still stopping")
    elif cmd == "restart" and p.pid is not None and p.pid == before.pid:
        # Still the same incarnation: waiting for its turn (a rolling restart), or
        # still on its way down.
        text = "not restarted yet"
        if p.rollout is not None:
            entry_reason: str | None = p.rollout.waiting_text()
        else:
            entry_reason = p.reason
        return {
            "name": name,
            "ok": False,
            "result": text,
            "pid": p.pid,
            "state": str(p.phase),
            **({"message": entry_reason} if entry_reason else {}),
        }
    elif p.phase is core.Phase.RUNNING:
        ok = True
        if cmd == "start" and before.phase is core.Phase.RUNNING:
            text = "already running"
        else:
            text = "started" if cmd == "start" else "restarted"
    elif p.phase is core.Phase.STARTING:
        text = "still starting"
    else:
        text = f"failed to {cmd}"
    entry: dict[str, Any] = {
        "name": name,
        "ok": ok,
        "result": text,
        "pid": p.pid if p.pid is not None else (before.pid if cmd == "stop" else None),
        "state": str(p.phase),
    }
    if p.reason and not ok:
        entry["message"] = p.reason
    elif cmd == "stop" and ok and before.pid is not None and _escalated(p):
        # The operator should know it took SIGKILL: the process ignored SIGTERM.
        entry["message"] = f"did not stop on SIGTERM within the stop timeout; {p.last_exit}"
    return entry


def _escalated(p: core.Proc) -> bool:
    """The last incarnation needed SIGKILL, ours (``killed``) or systemd's own at its
    ``TimeoutStopSec``, which may come first and then shows only in the exit."""
    return p.killed or (p.last_exit or "").startswith("killed by SIGKILL")


def wait_limit(cmd: str, p: core.Proc, policy: core.Policy) -> float:
    """How long a command may wait before it answers with the state so far."""
    if cmd == "stop":
        return policy.stop_timeout_sec + 5.0
    start = p.spec.start_timeout_sec or 60.0
    return start + (policy.stop_timeout_sec if cmd == "restart" else 0.0) + 5.0
