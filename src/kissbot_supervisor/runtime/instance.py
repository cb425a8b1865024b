"""One supervisor per runtime directory: a lock held for the daemon's whole life.

The runtime directory holds what a running supervisor alone may touch: its
control socket, the native backend's ``notify.sock`` that the bots ping, the
token files handed to them. A second supervisor on the same directory (a
second KissBot checkout on the host) would unlink and rebind the first one's
``notify.sock``: the first one's bots would then miss their watchdog pings
and be parked. So the daemon takes an exclusive ``flock`` on
``supervisor.lock`` in it before it creates anything there, and a second one is
refused with the first one's PID and workdir. The kernel drops the lock when
the process ends, however it ends: a stale file never blocks a start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "supervisor.lock"
_MAX_OWNER = 4096  # the lock file holds "PID WORKDIR"


class RuntimeDirInUse(OSError):
    """Another supervisor holds the runtime directory; the message says which."""


def claim_runtime_dir(directory: Path, workdir: Path) -> int:
    """Lock ``directory`` for this process (the descriptor: keep it open), or raise
    :class:`RuntimeDirInUse`. The file then says who holds it, for the next one."""
    path = directory / LOCK_NAME
    # O_CLOEXEC: a child must not inherit the lock and keep it after we are gone.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, _MAX_OWNER).decode("utf-8", "replace").strip()
        os.close(fd)
        pid, _, other = owner.partition(" ")
        who = f"PID {pid}, workdir {other}" if pid.isdigit() else "its lock file says no more"
        raise RuntimeDirInUse(
            f"another supervisor ({who}) uses the runtime directory {directory}: its "
            "control and notify sockets are there, and a second supervisor would take "
            "them from it; give this one a runtime directory of its own (--runtime-dir "
            "DIR; without it, each workdir gets its own)"
        ) from None
    except OSError:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # who holds it: a courtesy for the next one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {workdir}\n".encode(), 0)
    return fd
