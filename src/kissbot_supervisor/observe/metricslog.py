"""The JSON-lines metrics log: one snapshot per interval, appended to ``metrics.path``.

This is the daemon's only periodic timer, and it exists only when the log is
configured. Each write opens the file (``O_APPEND``, created 0640), writes one
line and closes it, so a rotated or deleted file is simply created again. A
write that fails (disk full, directory gone or not writable) is logged once,
and once more when writing works again; it never stops supervision.
"""

from __future__ import annotations

import os

from ..runtime.fs import open_regular

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ..runtime.log import Log
    from ..runtime.loop import Loop, Timer


class MetricsLog:
    def __init__(
        self,
        loop: Loop,
        path: Path,
        interval: float,
        line: Callable[[], bytes],
        log: Log,
        base: Path | None = None,
    ) -> None:
        """``base``: the workdir when ``path`` is in it (runtime/fs.py's rule)."""
        self.loop = loop
        self.path = path
        self._base = base
        self.interval = interval
        self._line = line
        self._log = log
        self._failing = False
        self._next = loop.now() + interval
        self._timer: Timer | None = loop.call_at(self._next, self._on_timer)

    def _on_timer(self) -> None:
        # Fixed steps from the start, so the lines do not drift; skip missed steps.
        now = self.loop.now()
        self._next += self.interval
        if self._next <= now:
            self._next = now + self.interval
        self._timer = self.loop.call_at(self._next, self._on_timer)
        self.write()

    def write(self) -> None:
        try:
            data = self._line()
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            fd = open_regular(self.path, flags, 0o640, base=self._base)
            try:
                while data:
                    data = data[os.write(fd, data) :]
            finally:
                os.close(fd)
        except OSError as e:
            if not self._failing:
                self._failing = True
                self._log.warning(
                    "metrics",
                    f"cannot write the metrics log {self.path}: {e.strerror or e}; "
                    "lines are dropped until it works again",
                )
            return
        if self._failing:
            self._failing = False
            self._log.info("metrics", f"writing the metrics log {self.path} again")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
