"""A program on a pseudo-terminal, and a small expect: wait for text, type keys.

The program gets the pty as its controlling terminal (``setsid --ctty``), so
the terminal's Ctrl-C (``\\x03``) and Ctrl-D (``\\x04``) mean what they mean to
a user. A reader thread collects everything the program writes; ``expect``
waits until a pattern shows up in that output with the terminal's escape
sequences and carriage returns removed, with a timeout that only bounds a
broken run.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import re
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Mapping, Sequence

# CSI (colours, cursor moves, bracketed-paste mode) and other two-byte escapes.
ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[=>()][0-9A-Za-z]?|\x07|\r")
TIMEOUT = 20.0
UP = "\x1b[A"
CTRL_C = "\x03"
CTRL_D = "\x04"
TAB = "\t"


def plain(text: str) -> str:
    """``text`` as a reader sees it: no escape sequences, no carriage returns."""
    return ESCAPES.sub("", text)


class PtyProgram:
    """``argv`` on a new pty of ``rows`` x ``columns``; its output collected as it comes."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: str | None = None,
        rows: int = 24,
        columns: int = 80,
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        # setsid: a session of its own, and --ctty: the pty as its controlling terminal.
        self.proc = subprocess.Popen(
            ["setsid", "--ctty", *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=dict(env),
            cwd=cwd,
        )
        os.close(slave)
        self.master = master
        self.raw = ""
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every slave descriptor is closed
                chunk = b""
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self.raw += decoder.decode(chunk)
                self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return plain(self.raw)

    def mark(self) -> int:
        """A point in the (plain) output: ``expect(..., since=mark)`` looks only after it."""
        return len(self.text)

    def expect(self, pattern: str, since: int = 0, timeout: float = TIMEOUT) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = rx.search(plain(self.raw), since)
                if match:
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    tail = plain(self.raw)[-3000:]
                    state = "ended" if self._eof else "still running"
                    raise AssertionError(
                        f"no output matching {pattern!r} (program {state}); output ends:\n{tail}"
                    )
                self._cond.wait(left)

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def resize(self, rows: int, columns: int) -> None:
        """As a user resizing the window: the kernel sends SIGWINCH to the foreground group."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def wait(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(5)
        os.close(self.master)
