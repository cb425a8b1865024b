"""Per-process log files for the native backend: time-stamped lines, size rotation.

A child's output pipe is always drained, whatever happens to the file: a full
disk or an unwritable directory drops lines (reported once) but never blocks
the child, which is what froze bots under the old supervisor.
"""

from __future__ import annotations

import errno
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ...runtime.fs import make_dirs, open_regular

MAX_PARTIAL = 64 * 1024  # a "line" longer than this is written in pieces
RETRY_AFTER = 10.0  # seconds before trying a failing log file again


def timestamp(now: float) -> bytes:
    whole = int(now)
    ms = int((now - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(whole)).encode() + b".%03d" % ms


LAST_LINES = 3  # the process's last output lines kept for its exit's reason
MAX_LAST_LINE = 512


class LogFile:
    """One process's log; ``write_chunk`` takes raw pipe output."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        backups: int,
        on_error: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        base: Path | None = None,
    ) -> None:
        """``clock``: when to try a failing file again (tests pass a fake one);
        ``base``: the workdir when the log is in it (runtime/fs.py's rule)."""
        self.path = path
        self._base = base
        self._clock = clock
        self.max_bytes = max_bytes
        self.backups = backups
        self._on_error = on_error
        self._fd = -1
        self._size = 0
        self._partial = b""
        # The process's own last lines (not the supervisor's notes): why it failed, in its
        # own words, for its exit's reason. Kept even when the file cannot be written.
        self.last_lines: deque[bytes] = deque(maxlen=LAST_LINES)
        self._failed_at: float | None = None  # when it last failed: the next retry after
        self._failing = False  # reported as failing, until a write succeeds again
        self.dropped_lines = 0

    def _open(self) -> bool:
        if self._fd >= 0:
            return True
        if self._failed_at is not None and self._clock() - self._failed_at < RETRY_AFTER:
            return False
        try:
            make_dirs(self.path.parent, self._base)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            self._fd = open_regular(self.path, flags, 0o640, base=self._base)
            st = os.fstat(self._fd)
            if st.st_nlink != 1:  # a hard link planted by a bot: another file's inode
                os.close(self._fd)
                self._fd = -1
                raise OSError(errno.EPERM, "it has other hard links")
            self._size = st.st_size
        except OSError as e:
            self._fail(f"cannot open {self.path}: {e.strerror}")
            return False
        return True

    def _fail(self, message: str) -> None:
        # Reported once per outage: a retry that fails again (a disk still full)
        # stays silent.
        if not self._failing:
            self._failing = True
            self._on_error(message + "; output is dropped until it works again")
        self._failed_at = self._clock()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def write_chunk(self, data: bytes, now: float) -> None:
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_PARTIAL:
            lines.append(self._partial)
            self._partial = b""
        if lines:
            self._keep_last(lines)
            self._write_lines(lines, now)

    def flush(self, now: float) -> None:
        """The pipe closed: write what is left of an unterminated last line."""
        if self._partial:
            self._keep_last([self._partial])
            self._write_lines([self._partial], now)
            self._partial = b""

    def _keep_last(self, lines: list[bytes]) -> None:
        for line in lines[-LAST_LINES:]:
            if line.strip():
                self.last_lines.append(line[:MAX_LAST_LINE])

    def note(self, message: str, now: float) -> None:
        """A line from the supervisor itself (start, exit), marked as such."""
        self._write_lines([b"[supervisor] " + message.encode()], now)

    def _write_lines(self, lines: list[bytes], now: float) -> None:
        if not self._open():
            self.dropped_lines += len(lines)
            return
        stamp = timestamp(now) + b" "
        payload = b"".join(stamp + line + b"\n" for line in lines)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            self.dropped_lines += len(lines)
            self._fail(f"cannot write {self.path}: {e.strerror}")
            return
        self._size += len(payload)
        if self._failing:
            # Only a write that went through ends the outage: on a full disk the
            # file opens fine and the next write fails again.
            self._failing = False
            self._failed_at = None
            self._on_error(f"{self.path} is writable again ({self.dropped_lines} lines were lost)")
            self.dropped_lines = 0
        if self._size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        try:
            for i in range(self.backups, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                newer = self.path.with_name(f"{self.path.name}.{i - 1}") if i > 1 else self.path
                if i == self.backups:
                    older.unlink(missing_ok=True)
                if newer.exists():
                    newer.rename(older)
            if self.backups == 0:
                self.path.unlink(missing_ok=True)
        except OSError as e:
            self._fail(f"cannot rotate {self.path}: {e.strerror}")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
