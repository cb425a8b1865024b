"""Lines of a child's output, collected as they come, to wait on (tests' only synchronisation).

A reader thread appends each line; ``wait_for`` blocks on a condition until a
line matches, with a timeout that only bounds a broken run. ``mark`` and
``since`` look at what came after a point, for events that happen twice.
"""

from __future__ import annotations

import re
import threading
import time
from typing import IO

EOF_MARK = "<<EOF>>"


class LineWatcher:
    def __init__(self, stream: IO[str], what: str = "log", timeout: float = 20.0) -> None:
        self.lines: list[str] = []
        self.what = what
        self.timeout = timeout
        self._cond = threading.Condition()
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append(EOF_MARK)
            self._cond.notify_all()

    def mark(self) -> int:
        """A point in the output: ``wait_for(..., since=mark)`` looks only at later lines."""
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: str, since: int = 0, timeout: float | None = None) -> re.Match[str]:
        """The first line matching ``pattern`` from line ``since`` on, once it has come."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._cond:
            while True:
                for line in self.lines[since:]:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] == EOF_MARK):
                    tail = "\n".join(self.lines[-40:])
                    raise AssertionError(f"no {self.what} line matching {pattern!r}:\n{tail}")
                self._cond.wait(left)

    def seen(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        with self._cond:
            return [line for line in self.lines if rx.search(line)]

    def index_of(self, pattern: str) -> int:
        rx = re.compile(pattern)
        with self._cond:
            for i, line in enumerate(self.lines):
                if rx.search(line):
                    return i
        raise AssertionError(f"no {self.what} line matching {pattern!r}")

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)
