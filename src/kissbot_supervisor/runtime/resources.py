"""The daemon's own resources: heap handed back after a burst, descriptors raised."""

from __future__ import annotations

import contextlib


def release_memory() -> None:
    """Hand the heap that start-up used (config parsing, 100 forks' worth of
    environment copies) back to the system: the supervisor then idles small."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)


def raise_fd_limit() -> None:
    """Four descriptors per process (pipe, pidfd, lock, log): 300 bots pass 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
