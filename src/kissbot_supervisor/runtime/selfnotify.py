"""The supervisor's own sd_notify to systemd, when systemd runs it (Type=notify).

READY=1 once the fleet's first start is under way, STATUS= with the fleet
summary when it changes, STOPPING=1 on shutdown, and watchdog pings from the
event loop at half of WATCHDOG_USEC: if the loop hangs, the pings stop and
systemd restarts the supervisor.
"""

from __future__ import annotations

import os

from .loop import Loop, Timer


class SelfNotifier:
    def __init__(self, loop: Loop, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        self.loop = loop
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._notifier = None
        self._last_status: str | None = None
        self._timer: Timer | None = None
        self._interval: float | None = None
        if not self.enabled:
            return
        import sdnotify

        self._notifier = sdnotify.SystemdNotifier()
        usec = env.get("WATCHDOG_USEC")
        wd_pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and wd_pid in (None, str(os.getpid())):
            self._interval = int(usec) / 2_000_000

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)

    def ready(self, status: str) -> None:
        self._last_status = status
        self._send(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")
        if self._interval:
            self._ping()

    def _ping(self) -> None:
        self._send("WATCHDOG=1")
        assert self._interval is not None
        self._timer = self.loop.call_later(self._interval, self._ping)

    def status(self, status: str) -> None:
        if self.enabled and status != self._last_status:
            self._last_status = status
            self._send(f"STATUS={status}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
