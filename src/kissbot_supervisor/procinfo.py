"""Figures about live processes for status and metrics (psutil, loaded on first use)."""

from __future__ import annotations


def rss_bytes(pid: int | None) -> int | None:
    if pid is None:
        return None
    import psutil  # lazy: the supervisor at rest does not pay for it

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
