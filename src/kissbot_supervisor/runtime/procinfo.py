"""Figures about live processes for status and metrics, read from /proc.

Not psutil, although it is a dependency: importing it costs the resident
supervisor about 1.4 MiB, a tenth of its memory budget, for two numbers that
/proc gives in one read each. Short-lived tools (kissbotctl, benchmarks) use psutil.
"""

from __future__ import annotations

import os

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


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of the process."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, ValueError, IndexError):
        return None
