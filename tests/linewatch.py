"""Lines of a child's output, collected as they come, to wait on (tests' only synchronisation).

A reader thread appends each line; ``wait_for`` blocks on a condition until a
line matches, with a timeout that only bounds a broken run. ``mark`` and
``since`` look at what came after a point, for events that happen twice.
:class:`Follower` runs a program whose output is followed that way
(``kissbotctl logs -f``, ``events``, ``journalctl -f``); :func:`wait_until`
is the bounded wait for a state that has no event of its own (a file, a
process gone).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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


def wait_until(predicate: Callable[[], bool], what: str = "", timeout: float = 20.0) -> None:
    """Wait for a state that has no event of its own (a file, a process gone)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


class Follower:
    """A program whose stdout lines are collected as they come (:attr:`out`).

    It runs in a session of its own, so that :meth:`close` ends it and whatever
    it started (``nsenter`` forks the command it runs): a descendant left
    holding the pipe would keep the reader waiting for an end that never comes.
    """

    def __init__(
        self,
        argv: Sequence[str],
        what: str,
        timeout: float = 20.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=None if env is None else dict(env),
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.out = LineWatcher(self.proc.stdout, what, timeout)
        self.lines = self.out.lines
        self.mark = self.out.mark
        self.wait_for = self.out.wait_for
        self.seen = self.out.seen
        self.index_of = self.out.index_of

    def interrupt(self, timeout: float = 5.0) -> int | None:
        """Ctrl-C to the program itself; its exit status, or None if it did not end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.out.join()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
