"""The supervisor's own log: one line per message, ``NAME: message``, with a level.

Every part of the daemon gets the one :class:`Log` and says how serious a line
is by the method it calls (``info``, ``warning``, ``error``), never by a
number. Under systemd (``JOURNAL_STREAM`` set) each line starts with the syslog
priority journald reads (``<4>``); elsewhere with the local time. A line that
cannot be written (a closed terminal) is dropped: logging must never take
supervision down with it.

A *sink* (:meth:`Log.add_sink`) gets every line too, as ``NAME: message``: the
native backend's daemon keeps its own log in a file next to the processes'
logs, since stderr alone is lost in a background run (journald keeps it under
systemd). A line the sink itself logs (its file failing) goes to the stream only.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO

    Sink = Callable[[str], None]

# syslog priorities (journald's PRIORITY), for the <N> prefix.
ERROR = 3
WARNING = 4
INFO = 6


class Log:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.journal = "JOURNAL_STREAM" in os.environ
        self._sinks: list[Sink] = []
        self._in_sink = False

    def add_sink(self, sink: Sink) -> None:
        """Also hand every line (``NAME: message``, no newline) to ``sink``."""
        self._sinks.append(sink)

    def info(self, name: str, message: str) -> None:
        self._write(INFO, name, message)

    def warning(self, name: str, message: str) -> None:
        self._write(WARNING, name, message)

    def error(self, name: str, message: str) -> None:
        self._write(ERROR, name, message)

    def _write(self, level: int, name: str, message: str) -> None:
        if self.journal:
            line = f"<{level}>{name}: {message}\n"
        else:
            line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {name}: {message}\n"
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):
            pass
        if self._sinks and not self._in_sink:
            self._in_sink = True
            try:
                for sink in self._sinks:
                    sink(f"{name}: {message}")
            finally:
                self._in_sink = False
