"""The daemon's own resources: heap handed back after a burst, descriptors raised."""

from __future__ import annotations

import contextlib
import os


def release_memory() -> None:
    """Hand the heap that start-up used (config parsing, 100 forks' worth of
    environment copies) back to the system: the supervisor then idles small."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)


# Open files a natively supervised process costs the supervisor: its output pipe,
# pidfd, lock and log file, and the exec report pipe while it starts.
FDS_PER_PROCESS = 5
# And the supervisor itself: control clients (64) and refused ones (16), events
# and metrics clients, hooks, the YAML child, the DB, inotify, epoll, sockets.
FDS_RESERVED = 160


def given_fd_limit() -> tuple[int, int]:
    """The descriptor limits (soft, hard) in force now."""
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)


def raise_fd_limit(wanted: int = 0) -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one, and the hard one to ``wanted``
    where allowed (CAP_SYS_RESOURCE); the limits then in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def descriptor_shortfall(processes: int) -> str | None:
    """Why ``processes`` natively supervised processes do not fit in this
    supervisor's descriptor limit (raised as far as it may be first), or None."""
    import resource

    needed = FDS_RESERVED + FDS_PER_PROCESS * processes
    soft, hard = raise_fd_limit(needed)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return None
    fit = max(0, (soft - FDS_RESERVED) // FDS_PER_PROCESS)
    return (
        f"{processes} processes need about {needed} open files on the native backend "
        f"({FDS_PER_PROCESS} each and {FDS_RESERVED} for the supervisor), but it may open "
        f"only {soft} (RLIMIT_NOFILE, hard limit {hard}); raise the limit (LimitNOFILE= "
        f"in its unit, ulimit -n or prlimit where it is started) or run at most {fit} processes"
    )


# The supervisor's own OOM score adjustment: kept alive before any bot. The
# processes get theirs from the settings (bot.oom_score_adjust, hub.oom_score_adjust).
SUPERVISOR_OOM_SCORE_ADJUST = -900


def set_oom_score_adjust(value: int) -> None:
    """This process's ``oom_score_adj``; lowering it needs CAP_SYS_RESOURCE (OSError)."""
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def protect_from_oom() -> str | None:
    """Make the OOM killer pass over the supervisor; why not, when it cannot."""
    try:
        set_oom_score_adjust(SUPERVISOR_OOM_SCORE_ADJUST)
    except OSError as e:
        return (
            f"kept its OOM score adjustment (setting {SUPERVISOR_OOM_SCORE_ADJUST}: "
            f"{e.strerror}); the processes' own (bot.oom_score_adjust) still make the "
            "OOM killer pick them before the supervisor"
        )
    return None


PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, value: int) -> int:
    """``prctl(option, value)`` on this process: 0, or the errno of its failure."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # libc is loaded: no find_library
    return 0 if libc.prctl(option, value, 0, 0, 0) == 0 else ctypes.get_errno()


def make_undumpable() -> None:
    """No core dump, and no ptrace by the same user: the daemon holds tokens (the
    YAML config, a decrypted token on its way to a credential file) and the
    Fernet key. The flag is reset at exec, so the bots are not affected."""
    with contextlib.suppress(OSError, AttributeError):
        prctl(PR_SET_DUMPABLE, 0)
