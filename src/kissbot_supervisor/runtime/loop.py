"""A small event loop on stdlib ``selectors``: file descriptors, one-shot timers, signals.

Not asyncio on purpose: ``import asyncio`` alone costs ~19.5 MiB of RSS against
~12.9 MiB for what this needs. The loop sleeps in ``epoll_wait`` with the
timeout of the earliest timer, or for good when there is none, so an idle
supervisor does not wake up.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable, Iterator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .inotify import DirectoryWatches

Callback = Callable[[], None]

# Rounds of input read without blocking before due timers run (see run_once).
# Bounded, so that a flood on one descriptor cannot hold the timers off for good.
DRAIN_ROUNDS = 8
# A turn that ends this much later than the timer it waited for means the loop
# was not running (SIGSTOP, a debugger, swap, a long burst of work): far beyond
# the milliseconds of a busy turn.
LATE_SEC = 1.0


class Timer:
    """A one-shot timer; ordered by deadline (then creation) in the loop's heap."""

    __slots__ = ("callback", "cancelled", "seq", "when")

    def __init__(self, when: float, seq: int, callback: Callback) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback
        self.cancelled = False

    def __lt__(self, other: Timer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """Readers, timers on the monotonic clock, and signals delivered as callbacks."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self._signal_handlers: dict[int, Callback] = {}
        self._signal_before: dict[int, Any] = {}
        self._signal_r: socket.socket | None = None
        self._signal_w: socket.socket | None = None
        self._stopped = False
        self._watches: DirectoryWatches | None = None
        self.wakeups = 0  # returns from epoll_wait, for the benchmarks
        # Told how late a turn was (more than LATE_SEC), before its timers run.
        self.on_late: Callable[[float], None] | None = None
        # Told of an exception a callback raised (a bug, or a resource run out):
        # one failed callback must not end the supervision of the whole fleet.
        # Unset, the exception ends run().
        self.on_error: Callable[[Exception], None] | None = None

    @staticmethod
    def now() -> float:
        return time.monotonic()

    # -- file descriptors --------------------------------------------------

    @property
    def watches(self) -> DirectoryWatches:
        """The loop's one inotify instance (runtime/inotify.py), made when first used."""
        if self._watches is None:
            from .inotify import DirectoryWatches

            self._watches = DirectoryWatches(self)
        return self._watches

    def add_reader(self, fd: int, callback: Callback) -> None:
        self._selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)

    def add_writer(self, fd: int, callback: Callback) -> None:
        self._selector.register(fd, selectors.EVENT_WRITE, callback)

    def remove_writer(self, fd: int) -> None:
        self.remove_reader(fd)  # one registration per fd: either reading or writing

    # -- timers --------------------------------------------------------------

    def call_at(self, when: float, callback: Callback) -> Timer:
        timer = Timer(when, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(self.now() + delay, callback)

    # -- signals ------------------------------------------------------------

    def add_signal_handler(self, signum: int, callback: Callback) -> None:
        """Run ``callback`` from the loop (not from the signal handler) on ``signum``."""
        if self._signal_r is None:
            self._signal_r, self._signal_w = socket.socketpair()
            self._signal_r.setblocking(False)
            self._signal_w.setblocking(False)
            signal.set_wakeup_fd(self._signal_w.fileno(), warn_on_full_buffer=False)
            self.add_reader(self._signal_r.fileno(), self._read_signals)
        self._signal_handlers[signum] = callback
        # close() puts back what was there before.
        self._signal_before.setdefault(signum, signal.getsignal(signum))
        # A Python-level handler that does nothing: the wakeup fd carries the number.
        signal.signal(signum, lambda _s, _f: None)

    def _read_signals(self) -> None:
        assert self._signal_r is not None
        try:
            data = self._signal_r.recv(256)
        except BlockingIOError:
            return
        for signum in dict.fromkeys(data):  # a burst of one signal: one call
            handler = self._signal_handlers.get(signum)
            if handler is not None:
                handler()

    # -- running -------------------------------------------------------------

    def stop(self) -> None:
        self._stopped = True

    def run(self) -> None:
        self._stopped = False
        while not self._stopped:
            self.run_once()

    def run_once(self) -> None:
        timeout = None
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if self._timers:
            timeout = max(0.0, self._timers[0].when - self.now())
        self._dispatch(self._selector.select(timeout))
        self.wakeups += 1
        now = self.now()
        if not self._due(now):
            return
        late = now - self._timers[0].when
        if late > LATE_SEC and self.on_late is not None:
            self.on_late(late)
        # A deadline is about to be acted upon. When the loop ran late (it was
        # paused by SIGSTOP or a debugger, or busy), input that came meanwhile may
        # cancel it: a watchdog ping, an exit. Read all of it first; epoll may
        # report only part of it, or nothing, on the turn that ends a long pause.
        for _ in range(DRAIN_ROUNDS):
            events = self._selector.select(0)
            if not events:
                break
            self._dispatch(events)
        now = self.now()
        while self._due(now):
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._call(timer.callback)

    def _due(self, now: float) -> bool:
        return bool(self._timers) and (self._timers[0].cancelled or self._timers[0].when <= now)

    def _dispatch(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, _mask in events:
            # A callback earlier in this batch may have removed this reader and
            # closed its descriptor (a process's end makes its pidfd, its pipe and
            # its socket ready at once), whose number a new reader may even hold
            # by now: only the very registration that was ready is called.
            try:
                current = self._selector.get_key(key.fileobj)
            except KeyError:
                continue
            if current is key:
                self._call(key.data)

    def _call(self, callback: Callback) -> None:
        try:
            callback()
        except Exception as e:
            if self.on_error is None:
                raise
            self.on_error(e)

    def close(self) -> None:
        if self._watches is not None:
            self._watches.close()
        if self._signal_r is not None:
            signal.set_wakeup_fd(-1)
            for signum, before in self._signal_before.items():
                signal.signal(signum, before if before is not None else signal.SIG_DFL)
            self.remove_reader(self._signal_r.fileno())
            self._signal_r.close()
            if self._signal_w is not None:
                self._signal_w.close()
            self._signal_r = self._signal_w = None
        self._selector.close()


def accepted(sock: socket.socket, on_error: Callable[[OSError], None]) -> Iterator[socket.socket]:
    """The connections waiting on a non-blocking listening socket that became readable.

    Stops when none is left; a failing ``accept`` goes to ``on_error`` and ends
    this turn (the next readiness tries again).
    """
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            on_error(e)
            return
        yield conn


def read_pipe(fd: int) -> bytes | None:
    """One read of a readable non-blocking pipe: data, ``b""`` at its end (or an
    error), None when nothing is there after all (a spurious wake-up)."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def received(sock: socket.socket, size: int) -> bytes | None:
    """What a readable non-blocking socket holds: None when nothing after all (a
    spurious wake-up), ``b""`` at its end, or when it failed (a reset peer is
    gone just the same)."""
    try:
        return sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
