"""Linux inotify through ctypes: told when a file appears, no polling.

:class:`DirectoryWatches` is the daemon's one inotify instance, shared by all
that watch a directory: ``pids/`` for ready flags (readiness), KissBot's
command and broadcast files (filecommands), and the token DB's directory
(the token gate). Two of them on ``pids/`` share one kernel watch, so a flag
file a bot writes wakes the loop once. :class:`Inotify` is the raw instance
(``kissbotctl logs -f`` uses it alone). The stdlib has no inotify and the
PyPI wrappers add nothing this handful of lines does not do.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .loop import Loop

    # (file name, mask) events of one directory from one wake-up; (None, 0) after a
    # queue overflow: events were lost, look at everything again.
    Events = list[tuple[str | None, int]]

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000  # the watch is gone (removed by us, or its directory deleted)
IN_DONT_FOLLOW = 0x02000000  # a symlink is not followed to the directory it names
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")


class Inotify:
    """One inotify instance; ``fileno()`` goes into the event loop."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)  # libc is loaded: no find_library (~1 MiB)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm_watch = libc.inotify_rm_watch
        self._rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
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

    def unwatch(self, wd: int) -> None:
        if self._dirs.pop(wd, None) is not None:
            self._rm_watch(self._fd, wd)

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
                if mask & IN_Q_OVERFLOW:
                    yield None, name, mask
                    continue
                directory = self._dirs.get(wd)
                if directory is None:
                    # A watch we removed: the kernel's IN_IGNORED for it, or events
                    # queued before it went. Not an overflow: taken as one, every
                    # unwatch made subscribers re-check all, and one that re-watches
                    # on an overflow (systemlog.py) made it a loop that never ended.
                    continue
                if mask & IN_IGNORED:
                    del self._dirs[wd]  # its directory was deleted: the kernel dropped it
                yield directory, name, mask

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Subscription:
    """What one subscriber watches: a handle, told apart by identity, not by value."""

    def __init__(self, directory: Path, mask: int, callback: Callable[[Events], None]) -> None:
        self.directory = directory
        self.mask = mask
        self.callback = callback


class DirectoryWatches:
    """One inotify instance in the event loop, its events handed to subscribers.

    ``subscribe(directory, mask, callback)``: after each wake-up, ``callback``
    gets the events of ``directory`` that match ``mask``, in one list. A kernel
    watch per directory carries the union of its subscribers' masks. Made on
    the first subscription: a daemon that watches nothing has no descriptor.
    """

    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        self._inotify: Inotify | None = None
        self._subs: dict[Path, list[Subscription]] = {}
        self._wds: dict[Path, int] = {}

    def subscribe(
        self, directory: Path, mask: int, callback: Callable[[Events], None]
    ) -> Subscription:
        """Raises OSError (the directory cannot be watched), and then changes nothing."""
        if self._inotify is None:
            self._inotify = Inotify()
            self._loop.add_reader(self._inotify.fileno(), self._on_readable)
        sub = Subscription(directory, mask, callback)
        self._subs.setdefault(directory, []).append(sub)
        try:
            self._rewatch(directory)
        except OSError:
            self.cancel(sub)
            raise
        return sub

    def cancel(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.directory, [])
        if any(s is sub for s in subs):
            subs[:] = [s for s in subs if s is not sub]
            self._rewatch(sub.directory)

    def _rewatch(self, directory: Path) -> None:
        assert self._inotify is not None
        subs = self._subs.get(directory)
        if subs:
            mask = 0
            for sub in subs:
                mask |= sub.mask
            # Watching a watched directory again replaces its mask (no IN_MASK_ADD).
            self._wds[directory] = self._inotify.watch(directory, mask)
            return
        self._subs.pop(directory, None)
        wd = self._wds.pop(directory, None)
        if wd is not None:
            self._inotify.unwatch(wd)

    def _on_readable(self) -> None:
        assert self._inotify is not None
        batches: dict[Path, Events] = {}
        overflow = False
        for directory, name, mask in self._inotify.read():
            if directory is None:
                overflow = True
            else:
                batches.setdefault(directory, []).append((name, mask))
        for directory, subs in list(self._subs.items()):
            events = batches.get(directory, [])
            for sub in list(subs):
                mine: Events = [(n, m) for n, m in events if m & sub.mask]
                if overflow:
                    mine.append((None, 0))
                # A callback may have cancelled a later subscriber: skip it then.
                if mine and any(s is sub for s in self._subs.get(directory, [])):
                    sub.callback(mine)

    def close(self) -> None:
        if self._inotify is not None:
            self._loop.remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None
        self._subs.clear()
        self._wds.clear()
