"""Signs of life from the file an unmodified KissBot bot writes every 60 s.

``bot.liveness: system-log``: KissBot sends no watchdog pings, but once it runs it
appends its CPU and RAM figures to ``logs/broadcast/CH/system.log`` every minute.
:class:`SystemLogWatcher` watches that file with inotify (no polling: an idle
fleet costs one wake-up per bot per minute) and calls ``on_write(name)`` for
each new write; the daemon hands that to the core as a ``WatchdogPing``, and the
core's watchdog deadline does the rest (a silence past the limit is a hang:
killed and restarted, the same path as a missed WATCHDOG=1). The backend plays
no part, so it works the same under the native and the systemd backend.

The file and its directories may not exist yet (the bot makes them on its first
line), may be rotated, removed or replaced. Each directory on the way is
watched once it exists, from the workdir down, for the next one to appear or
go; the last one for writes to the file.

The workdir is the bots' (runtime/fs.py): a bot may put a symlink or a FIFO
where the file or a directory was. Nothing is ever opened there but the
directories, without following a symlink; the file is only ``lstat``-ed
(``fstatat`` with ``AT_SYMLINK_NOFOLLOW``), which neither follows nor blocks.
A write counts only when the regular file reached that way has changed
(another inode, another mtime): a symlink, a FIFO or a directory in its place,
or a symlinked directory on the way, is no sign of life, and the bot ends up
killed as hung after the silence, with a warning saying why. An event from a
watch misdirected by a swap (a directory replaced between the check and the
watch) is checked the same way, so it can lose signs of life, never make one up.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from ..runtime.fs import DIR_FLAGS, open_dir
from ..runtime.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_MODIFY,
    IN_MOVED_TO,
    Subscription,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..runtime.inotify import Events
    from ..runtime.log import Log
    from ..runtime.loop import Loop

    # What the file was when last looked at: (inode, mtime in ns), or None (missing, or
    # not a regular file reached without a symlink).
    Seen = tuple[int, int] | None

IN_MOVED_FROM = 0x00000040
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
# A directory on the way: the next one appears or goes (a rotation of the whole tree).
ENTRY_EVENTS = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM
# The file's own directory: a write, or a new file in its place (a rotation).
WRITE_EVENTS = IN_MODIFY | IN_CLOSE_WRITE | ENTRY_EVENTS
# A bot that writes its file in a loop wakes the daemon at most once a second: the
# core loses at most that much of the silence it allows.
CHECK_GAP_SEC = 1.0


class _Watched:
    """One bot's file: where it is, and what is known of it."""

    __slots__ = ("dirs", "file", "name", "problem", "seen", "written_at")

    def __init__(self, name: str, relative: str, workdir: Path) -> None:
        self.name = name
        self.file = relative
        parts = Path(relative).parts
        # The workdir, then each directory below it on the way to the file.
        self.dirs = [workdir.joinpath(*parts[:i]) for i in range(len(parts))]
        self.seen: Seen = None
        self.problem: str | None = None  # said once, until it changes
        self.written_at: float | None = None  # when a write was last passed on

    def child(self, level: int) -> str:
        """The entry of ``dirs[level]`` that leads to the file (the file itself, last)."""
        return Path(self.file).parts[level]


class SystemLogWatcher:
    """``configure({name: relative path})``; ``on_write(name)`` for each new write."""

    def __init__(
        self, loop: Loop, workdir: Path, on_write: Callable[[str], None], log: Log
    ) -> None:
        self._loop = loop
        self._workdir = workdir
        self._on_write = on_write
        self._log = log
        self._watched: dict[str, _Watched] = {}
        # Directory -> its subscription, and the bots that need it (name -> the level
        # it is on their way). Watched once, whatever the number of bots below it.
        self._subs: dict[Path, Subscription] = {}
        self._users: dict[Path, dict[str, int]] = {}
        # (directory, entry) -> the bots whose way goes through that entry (or whose
        # file it is): an event finds them at once, whatever the size of the fleet.
        self._by_entry: dict[tuple[Path, str], set[str]] = {}
        # The inode each subscription watches: a directory removed and made again (in
        # one batch of events) is another inode, and the kernel dropped the old watch.
        self._inodes: dict[Path, int] = {}

    def configure(self, files: dict[str, str]) -> None:
        """Watch exactly these files (a reload adds and removes bots)."""
        for name in [n for n in self._watched if files.get(n) != self._watched[n].file]:
            self._drop(name)
        for name, relative in files.items():
            if name not in self._watched:
                w = self._watched[name] = _Watched(name, relative, self._workdir)
                self._sync(w, count=False)  # a file already there is no news

    def close(self) -> None:
        for name in list(self._watched):
            self._drop(name)

    # -- which directories are watched ---------------------------------------

    def _sync(self, w: _Watched, *, count: bool = True) -> None:
        """Watch each directory on the way that exists, reached without a symlink;
        then look at the file (``count``: a change is a sign of life)."""
        inodes, problem = self._reachable(w)
        for level, directory in enumerate(w.dirs):
            if level < len(inodes):
                last = level == len(w.dirs) - 1
                self._use(directory, w.name, level, inodes[level], last=last)
            else:
                self._unuse(directory, w)
        self._look(w, count, problem if len(inodes) < len(w.dirs) else None)

    def _reachable(self, w: _Watched) -> tuple[list[int], str | None]:
        """The inodes of those of ``w.dirs`` that are real directories, from the workdir
        down; and why not the next one, when that is worth a warning (not when it is
        just missing)."""
        fd = os.open(self._workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        inodes = [os.fstat(fd).st_ino]
        try:
            for level in range(1, len(w.dirs)):
                try:
                    child = os.open(w.child(level - 1), DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.EACCES):
                        return inodes, None
                    is_link = os.path.islink(w.dirs[level])
                    what = "is a symlink (not followed)" if is_link else "is not a directory"
                    return inodes, f"{w.dirs[level].relative_to(self._workdir)} {what}"
                os.close(fd)
                fd = child
                inodes.append(os.fstat(fd).st_ino)
        finally:
            os.close(fd)
        return inodes, None

    def _use(self, directory: Path, name: str, level: int, inode: int, *, last: bool) -> None:
        users = self._users.setdefault(directory, {})
        if users.get(name) != level:
            users[name] = level
            entry = self._watched[name].child(level)
            self._by_entry.setdefault((directory, entry), set()).add(name)
        mask = WRITE_EVENTS if last else ENTRY_EVENTS
        sub = self._subs.get(directory)
        if sub is not None and self._inodes.get(directory) == inode:
            if sub.mask & mask == mask:
                return
            mask |= sub.mask
        if sub is not None:
            self._loop.watches.cancel(sub)
            del self._subs[directory]
        if directory != self._workdir:
            # The path was just walked without a symlink; one swapped in since is
            # not followed at its end (and a swap higher up only misdirects events).
            mask |= IN_DONT_FOLLOW | IN_ONLYDIR
        try:
            self._subs[directory] = self._loop.watches.subscribe(
                directory, mask, lambda events: self._on_events(directory, events)
            )
            self._inodes[directory] = inode
        except OSError as e:
            # Gone or swapped meanwhile (its parent's watch says so), or out of
            # inotify watches (fs.inotify.max_user_watches): the bot looks silent.
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                self._log.warning(
                    name,
                    f"cannot watch {directory} for bot.liveness ({e.strerror}): its "
                    "system.log writes go unseen and it will be taken for hung",
                )

    def _unuse(self, directory: Path, w: _Watched) -> None:
        users = self._users.get(directory)
        level = None if users is None else users.pop(w.name, None)
        if users is None or level is None:
            return
        key = (directory, w.child(level))
        self._by_entry[key].discard(w.name)
        if not self._by_entry[key]:
            del self._by_entry[key]
        if users:
            return  # (a mask wider than now needed is harmless: events are filtered)
        del self._users[directory]
        self._inodes.pop(directory, None)
        sub = self._subs.pop(directory, None)
        if sub is not None:
            self._loop.watches.cancel(sub)

    def _forget_below(self, top: Path) -> None:
        """End the subscriptions of ``top`` and of the directories under it (their
        users stay: the next sync watches whatever is there now)."""
        for directory in [d for d in self._subs if d.is_relative_to(top)]:
            self._loop.watches.cancel(self._subs.pop(directory))
            self._inodes.pop(directory, None)

    def _drop(self, name: str) -> None:
        w = self._watched.pop(name)
        for directory in w.dirs:
            self._unuse(directory, w)

    # -- events --------------------------------------------------------------

    def _on_events(self, directory: Path, events: Events) -> None:
        users = self._users.get(directory, {})
        to_sync: set[str] = set()
        to_look: dict[str, bool] = {}  # name -> only written (no entry came or went)
        for entry, mask in events:
            if entry is None:  # the queue overflowed: events were lost, start again
                self._forget_below(self._workdir)
                to_sync.update(self._watched)
                continue
            names = self._by_entry.get((directory, entry), set())
            for name in names:
                w = self._watched[name]
                if users[name] == len(w.dirs) - 1:
                    to_look[name] = to_look.get(name, True) and not mask & ENTRY_EVENTS
                elif mask & ENTRY_EVENTS:
                    to_sync.add(name)
            if names and mask & (IN_DELETE | IN_MOVED_FROM):
                # A directory of ours gone: the kernel dropped its watch, and one made
                # again in its place (even with the same inode number) needs a new one.
                self._forget_below(directory / entry)
        # (The callbacks feed the core, which never changes what is watched.)
        for name in to_sync:
            self._sync(self._watched[name])
        for name, written in to_look.items():
            w = self._watched[name]
            if name in to_sync or (written and self._too_soon(w)):
                continue  # looked at by the sync; or not yet, and still news after the gap
            self._look(w, True, None)

    def _too_soon(self, w: _Watched) -> bool:
        """A write was passed on less than CHECK_GAP_SEC ago."""
        return w.written_at is not None and self._loop.now() - w.written_at < CHECK_GAP_SEC

    def _look(self, w: _Watched, count: bool, problem: str | None) -> None:
        seen: Seen = None
        if problem is None:
            seen, problem = self._stat(w)
        if problem != w.problem:
            w.problem = problem
            if problem is not None:
                self._log.warning(
                    w.name,
                    f"{w.file}: {problem}; its writes are no sign of life for "
                    "bot.liveness, and the bot will be taken for hung unless that changes",
                )
        if seen is not None and seen != w.seen and count:
            if self._too_soon(w):
                return  # (a new file in a loop: news again after the gap)
            w.written_at = self._loop.now()
            self._on_write(w.name)
        w.seen = seen

    def _stat(self, w: _Watched) -> tuple[Seen, str | None]:
        """The file's (inode, mtime), reached without a symlink; or why not."""
        try:
            fd = open_dir(w.dirs[-1], self._workdir)
        except OSError:
            return None, None  # a directory gone or swapped: its parent's watch resyncs
        try:
            st = os.stat(Path(w.file).name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None, None
        finally:
            os.close(fd)
        if stat.S_ISREG(st.st_mode):
            return (st.st_ino, st.st_mtime_ns), None
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        if stat.S_ISFIFO(st.st_mode):
            kind = "a FIFO"
        return None, f"is {kind}"
