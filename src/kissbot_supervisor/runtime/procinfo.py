"""What the kernel says about live processes: figures for status and metrics,
ancestry, and who is at the other end of a Unix socket (``SO_PEERCRED``).

Not psutil: importing it costs the resident supervisor about 1.4 MiB, a tenth
of its memory budget, for numbers that /proc gives in one read each (the
benchmarks use it).
"""

from __future__ import annotations

import os
import socket
import struct

_UCRED = struct.Struct("iII")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _stat_fields(pid: int) -> list[bytes]:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses):
    field 3 (state) first. OSError when the process is gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of the process."""
    if pid is None:
        return None
    try:
        fields = _stat_fields(pid)
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, ValueError, IndexError):
        return None


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """The kernel's word on a Unix socket's peer: (PID, UID, GID)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(creds)
    return pid, uid, gid


def parent_pid(pid: int) -> int | None:
    """The process's parent (a zombie's too, until it is reaped); None when gone."""
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, ValueError, IndexError):
        return None


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``pid`` is ``ancestor`` or one of its descendants (parents from /proc)."""
    for _ in range(64):  # deeper than any real process tree we watch
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        parent = parent_pid(pid)
        if parent is None:
            return False
        pid = parent
    return False


def own_children() -> set[int]:
    """The PIDs of this process's children, zombies included (every thread's list:
    an orphan is handed to any live thread of its subreaper)."""
    pids: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/children", "rb") as f:
                pids.update(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue
    return pids


def command_line(pid: int, limit: int = 120) -> str:
    """The process's argv joined by spaces, cut to ``limit``; ``?`` when gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(limit + 1)
    except OSError:
        return "?"
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    # Its argv is the process's to choose: no line breaks or escapes in our log.
    text = "".join("?" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def processes_with_env(key: str, value: str) -> list[int]:
    """The live processes (but this one) whose environment holds ``key=value``.

    An environment is readable by the process's owner and root only: others'
    processes are not seen, which is what a supervisor may kill anyway.
    """
    wanted = f"{key}={value}".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue  # gone, a kernel thread, or not ours to read
    return found
