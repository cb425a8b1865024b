"""Linux inotify through ctypes: told when a file appears, no polling.

Used for ``pids/CH.ready`` (file readiness) and the token DB (start a blocked
bot once its token is fixed). The stdlib has no inotify and the PyPI wrappers
add nothing this handful of lines does not do.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from pathlib import Path

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")


class Inotify:
    """One inotify instance; ``fileno()`` goes into the event loop."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)  # libc is loaded: no find_library (~1 MiB)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd: int = fd
        self._dirs: dict[int, Path] = {}

    def fileno(self) -> int:
        return self._fd

    def watch(self, directory: Path, mask: int) -> int:
        wd: int = self._add_watch(self._fd, os.fsencode(directory), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot watch {directory}: {os.strerror(err)}")
        self._dirs[wd] = directory
        return wd

    def read(self) -> Iterator[tuple[Path | None, str, int]]:
        """(watched directory, file name, mask) for each pending event.

        On a queue overflow the directory is None: the caller should re-check
        everything it watches.
        """
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                name = os.fsdecode(raw.rstrip(b"\0"))
                yield (None if mask & IN_Q_OVERFLOW else self._dirs.get(wd)), name, mask

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
