"""The daemon's STATUS object (the contract: status.py) and the one-line summary, from the core."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import __version__, core
from ..runtime.procinfo import rss_bytes
from ..status import process_entry, status_object

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..config.load import Config
    from ..status import Status, SupervisorInfo
    from .history import History


def summary(fleet: core.Core) -> str:
    """``57/60 bots running, hub ready``: the supervisor's STATUS= line and header."""
    bots = [p for n, p in fleet.procs.items() if n != core.HUB]
    running = sum(p.phase is core.Phase.RUNNING for p in bots)
    text = f"{running}/{len(bots)} bots running"
    hub = fleet.procs.get(core.HUB)
    if hub is not None:
        text += ", hub ready" if hub.phase is core.Phase.RUNNING else f", hub {hub.phase}"
    alike = fleet.failing_alike()
    if alike is not None:
        text += f"; {alike[0]} failing alike: {alike[1]}"
    if fleet.shutting_down:
        text = "stopping: " + text
    return text


def build_status(
    fleet: core.Core,
    cfg: Config,
    backend: str,
    control_path: Path,
    started_at: float,
    now: float,
    history: History,
) -> Status:
    """Everything ``kissbotctl status`` shows, read from the core at ``now`` (its clock)."""
    entries = []
    wall = time.time()
    for st in fleet.status(now):
        if st.state is core.Phase.RUNNING and st.uptime_s is not None:
            # Up since its start, as the UPTIME column (and right for an adopted one).
            since: float | None = wall - st.uptime_s
        else:
            since = history.since(st.name, str(st.state))
        entry = process_entry(
            st.name,
            state=str(st.state),
            want=st.want,
            pid=st.pid,
            uptime_s=st.uptime_s,
            restarts=st.restarts,
            rss_bytes=rss_bytes(st.pid),
            last_exit=st.last_exit,
            token_state=st.token_state,
            reason=st.reason,
            status_text=st.status_text,
            since=since,
            argv=fleet.procs[st.name].spec.argv,
            exits=history.exits(st.name),
        )
        if st.name == core.HUB:
            entry["socket"] = str(cfg.settings.hub_socket)
        entries.append(entry)
    supervisor: SupervisorInfo = {
        "pid": os.getpid(),
        "uptime_s": round(time.time() - started_at, 3),
        "version": __version__,
        "config": str(cfg.config_file),
        "workdir": str(cfg.workdir),
        "control_socket": str(control_path),
        "logs_dir": str(cfg.resolve(cfg.settings.logs_dir)),
        "rss_bytes": rss_bytes(os.getpid()),
        "summary": summary(fleet),
    }
    return status_object(backend, supervisor, entries)
