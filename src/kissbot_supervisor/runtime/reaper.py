"""Every process the supervisor's children start ends up its child, and is ended.

A process can leave its process group (``setsid``) and its parent (a double
fork): then neither the group kill at a stop nor ``PR_SET_PDEATHSIG`` reaches
it, and a bot's grandchild that keeps the bot's lock open keeps that channel
from ever starting again. So the supervisor makes itself the *child subreaper*
of its descendants (``PR_SET_CHILD_SUBREAPER``): an orphan among them is handed
to it, not to PID 1. A child the supervisor did not start itself (a bot, the
hub, an ``on_failure`` hook, its prompt) is such an orphan: it has outlived the
process that started it, and is killed (SIGKILL) and reaped.

The sweep runs at every SIGCHLD (a child of ours ended: its own children have
just been handed to us, before the kernel told us), every 10 s (an orphan whose
parent was not ours, a bot's grandchild while the bot runs, comes without a
signal), and at the supervisor's exit. The orphans of a supervisor that is
itself killed with SIGKILL go to PID 1 (or the service manager): only a cgroup
can hold those (the systemd backend's units are cgroups).
"""

from __future__ import annotations

import contextlib
import os
import signal

from .log import Log
from .loop import Loop
from .procinfo import command_line, own_children
from .resources import PR_SET_CHILD_SUBREAPER, prctl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

SWEEP_EVERY_SEC = 10.0


class Reaper:
    """``started()`` names the PIDs the supervisor started and reaps itself."""

    def __init__(self, loop: Loop, log: Log, started: Callable[[], set[int]]) -> None:
        self.loop = loop
        self.log = log
        self.started = started
        self.killed = 0  # orphans ended since the start (for tests and metrics)

    def start(self) -> None:
        err = prctl(PR_SET_CHILD_SUBREAPER, 1)
        if err:
            self.log.warning(
                "supervisor",
                f"cannot become the subreaper of the bots' processes ({os.strerror(err)}): "
                "a process that leaves its bot's process group may outlive it",
            )
            return
        self.loop.add_signal_handler(signal.SIGCHLD, self.sweep)
        self._every()  # and orphans handed over before the handler was in place

    def _every(self) -> None:
        self.sweep()
        self.loop.call_later(SWEEP_EVERY_SEC, self._every)

    def sweep(self) -> None:
        """Kill and reap every child the supervisor did not start."""
        strays = own_children() - self.started()
        for pid in sorted(strays):
            try:
                reaped, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue  # reaped meanwhile
            if reaped:
                continue  # it had ended already: reaped, nothing to say
            what = command_line(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.killed += 1
            self.log.warning(
                "supervisor",
                f"killed PID {pid} ({what}): a process of the fleet that left its process "
                "group and outlived the process that started it",
            )
            # Reaped at once when it is gone already, else at its SIGCHLD.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
