"""The event loop's order of work after it ran late (runtime/loop.py).

The selector and the clock are stand-ins: a real socket pair carries the input,
and the clock moves only when the test moves it.
"""

from __future__ import annotations

import selectors
import socket

import pytest

from kissbot_supervisor.runtime.loop import LATE_SEC, Loop


class FakeClockLoop(Loop):
    def __init__(self) -> None:
        super().__init__()
        self.clock = 100.0

    def now(self) -> float:  # type: ignore[override]
        return self.clock


class BlindFirstSelector(selectors.DefaultSelector):
    """Reports nothing on its first blocking call, as epoll did at the end of a
    long SIGSTOP with input queued; true afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.blind = True

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self.blind and timeout != 0:
            self.blind = False
            return []
        return list(super().select(0))


def test_input_that_came_while_late_is_read_before_a_due_timer() -> None:
    loop = FakeClockLoop()
    loop._selector = BlindFirstSelector()
    order: list[str] = []
    r, w = socket.socketpair()
    try:
        loop.add_reader(r.fileno(), lambda: order.append(r.recv(64).decode()))
        loop.call_at(101.0, lambda: order.append("deadline"))
        w.send(b"ping")
        loop.clock = 110.0  # the loop was paused past its timer
        loop.run_once()
        assert order == ["ping", "deadline"]
    finally:
        loop.close()
        r.close()
        w.close()


def test_a_late_turn_is_reported_before_its_timers_run() -> None:
    loop = FakeClockLoop()
    order: list[object] = []
    loop.on_late = order.append
    loop.call_at(101.0, lambda: order.append("deadline"))
    loop.clock = 101.0 + LATE_SEC + 5.0
    loop.run_once()
    assert order == [LATE_SEC + 5.0, "deadline"]
    loop.close()


def test_a_turn_on_time_is_not_reported() -> None:
    loop = FakeClockLoop()
    order: list[object] = []
    loop.on_late = order.append
    loop.call_at(101.0, lambda: order.append("deadline"))
    loop.clock = 101.0 + LATE_SEC / 2
    loop.run_once()
    assert order == ["deadline"]
    loop.close()


def test_a_failing_callback_is_reported_and_the_loop_goes_on() -> None:
    loop = FakeClockLoop()
    errors: list[Exception] = []
    loop.on_error = errors.append
    ran: list[str] = []

    def fails() -> None:
        raise OSError(24, "Too many open files")

    loop.call_at(101.0, fails)
    loop.call_at(101.0, lambda: ran.append("next"))
    loop.clock = 101.0
    loop.run_once()
    assert [type(e) for e in errors] == [OSError]
    assert ran == ["next"]
    loop.close()


def test_without_a_handler_a_failing_callback_ends_the_run() -> None:
    loop = FakeClockLoop()

    def fails() -> None:
        raise ValueError("a bug")

    loop.call_at(101.0, fails)
    loop.clock = 101.0
    with pytest.raises(ValueError, match="a bug"):
        loop.run_once()
    loop.close()
