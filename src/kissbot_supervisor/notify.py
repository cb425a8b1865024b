"""sd_notify for bots: tell the supervisor (or systemd) "ready", a status line, and "alive".

A bot that imports this module opts in to real readiness and liveness signals
instead of the supervisor guessing from ``pids/CH.ready`` and log file times.
Every call is a cheap no-op when ``NOTIFY_SOCKET`` is unset (a bot started by
hand) and never raises: a bot must not die because its supervisor went away.

Usage, in a bot's own event loop::

    from kissbot_supervisor import notify

    pinger = notify.WatchdogPinger()      # reads WATCHDOG_USEC once
    connect_irc_and_eventsub()
    notify.ready()
    notify.status("joined #mychannel")
    while running:
        handle_events(timeout=pinger.seconds_until_due(default=30.0))
        pinger.ping_if_due()              # from this loop only: a hung loop stops pinging
    notify.stopping()

The pinger deliberately has no thread of its own. A background thread would keep
pinging while the bot's main loop is stuck, which hides exactly the hang the
watchdog exists to catch.

Import cost matters (hundreds of bots share a small machine), so this module
imports only ``os`` and ``time``; ``sdnotify`` (and ``socket``) are imported on
the first send, and only when ``NOTIFY_SOCKET`` is set.
"""

from __future__ import annotations

import os
import time

__all__ = [
    "WatchdogPinger",
    "ready",
    "status",
    "stopping",
    "watchdog_interval",
    "watchdog_ping",
]


# Seconds one notification may block on a full supervisor queue.
_SEND_TIMEOUT = 2.0


def _send(state: str) -> None:
    """Send one notification datagram; swallow every failure.

    A fresh ``SystemdNotifier`` per call keeps the module free of mutable state;
    a socket, a connect and a send cost microseconds, and notifications are rare
    (a handful at start, then one watchdog ping every few seconds).
    """
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    try:
        # Deferred: an unsupervised bot never pays for sdnotify and socket.
        import warnings

        import sdnotify

        # sdnotify leaks its socket when connect() fails (supervisor gone): the
        # object is dropped inside its constructor and emits a ResourceWarning,
        # which test suites that turn warnings into errors would report against
        # the bot. The failure itself is the documented silent no-op.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            notifier = sdnotify.SystemdNotifier()
        sock = notifier.socket
        if sock is None:
            return
        try:
            # The socket is blocking: a supervisor that stops reading would
            # freeze the bot on a full datagram queue. Dropping a ping after a
            # while beats hanging; the wait stays long enough that READY=1 from
            # hundreds of bots starting at once still gets through.
            sock.settimeout(_SEND_TIMEOUT)
            notifier.notify(state)
        finally:
            sock.close()
    except Exception:
        # A notification must never take the bot down.
        return


def _one_line(text: str) -> str:
    # sd_notify is newline-separated KEY=VALUE; a newline in the text would
    # start a bogus assignment. sdnotify encodes with latin-1, so pass UTF-8
    # bytes through it unchanged instead of losing non-latin-1 text.
    flat = " ".join(text.splitlines())
    return flat.encode("utf-8").decode("latin-1")


def ready() -> None:
    """Report that start-up is complete (``READY=1``)."""
    _send("READY=1")


def status(text: str) -> None:
    """Report a one-line human-readable status (``STATUS=text``)."""
    _send("STATUS=" + _one_line(text))


def stopping() -> None:
    """Report that an orderly shutdown has begun (``STOPPING=1``)."""
    _send("STOPPING=1")


def watchdog_ping() -> None:
    """Report liveness once (``WATCHDOG=1``); see ``WatchdogPinger`` for pacing."""
    _send("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings: half of ``WATCHDOG_USEC``, as sd_watchdog_enabled advises.

    None when the watchdog is off: ``WATCHDOG_USEC`` unset, 0 or not a number,
    or ``WATCHDOG_PID`` names another process (the variables were inherited
    from a parent and are not meant for us).
    """
    raw_pid = os.environ.get("WATCHDOG_PID")
    if raw_pid:
        try:
            if int(raw_pid) != os.getpid():
                return None
        except ValueError:
            return None
    raw_usec = os.environ.get("WATCHDOG_USEC")
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000


class WatchdogPinger:
    """Paces ``WATCHDOG=1`` pings from the caller's own loop.

    The first call to ``ping_if_due`` pings at once (the watchdog timer has been
    running since the process started); later calls ping when at least the
    interval has passed since the previous ping. With the watchdog off, nothing
    is ever due.
    """

    def __init__(self, interval: float | None = None, *, now: float | None = None) -> None:
        """``interval`` in seconds; None reads it from the environment with ``watchdog_interval()``.

        ``now`` is the monotonic time of creation (``time.monotonic()`` if None);
        the first ping is due then.
        """
        if interval is not None and interval <= 0:
            raise ValueError(f"WatchdogPinger interval must be > 0 seconds, got {interval!r}")
        self._interval = watchdog_interval() if interval is None else interval
        self._next_due = time.monotonic() if now is None else now

    @property
    def interval(self) -> float | None:
        """Seconds between pings, or None when the watchdog is off."""
        return self._interval

    def next_due(self) -> float | None:
        """Monotonic time of the next ping, or None when the watchdog is off."""
        if self._interval is None:
            return None
        return self._next_due

    def seconds_until_due(
        self, default: float | None = None, now: float | None = None
    ) -> float | None:
        """Time to the next ping, never negative, for a select()/poll() timeout.

        Returns ``default`` when the watchdog is off.
        """
        due = self.next_due()
        if due is None:
            return default
        current = time.monotonic() if now is None else now
        wait = max(0.0, due - current)
        return wait if default is None else min(wait, default)

    def ping_if_due(self, now: float | None = None) -> bool:
        """Send ``WATCHDOG=1`` if a ping is due at ``now``; return whether it pinged."""
        if self._interval is None:
            return False
        current = time.monotonic() if now is None else now
        if current < self._next_due:
            return False
        watchdog_ping()
        # Pace from the actual ping time, not the old deadline: after a stall we
        # want one ping now, not a burst catching up on missed ones.
        self._next_due = current + self._interval
        return True
