"""The event loop's order of work after it ran late (runtime/loop.py).

The selector and the clock are stand-ins: a real socket pair carries the input,
and the clock moves only when the test moves it.
"""

from __future__ import annotations

import os
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


def test_a_reader_removed_earlier_in_the_same_turn_is_not_called() -> None:
    # Both ends ready at once; whichever is called first removes the other and
    # closes it (a fork server's exit: its socket, pidfd and pipe all ready), and
    # the other's descriptor number is taken by a new reader in the same turn.
    loop = Loop()
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    a_peer.send(b"x")
    b_peer.send(b"y")
    calls: list[str] = []
    pairs = {"a": (a, b), "b": (b, a)}
    spare: list[socket.socket] = []
    reused: list[int] = []

    def on(name: str) -> None:
        calls.append(name)
        own, other = pairs[name]
        if other.fileno() >= 0:
            number = other.fileno()
            new, peer = socket.socketpair()  # before the close: on other numbers
            loop.remove_reader(number)
            other.close()
            os.dup2(new.fileno(), number)  # a new reader on the number just closed
            spare.extend([new, peer])
            reused.append(number)
            peer.send(b"z")
            loop.add_reader(number, lambda: calls.append("new"))
        own.recv(1)

    loop.add_reader(a.fileno(), lambda: on("a"))
    loop.add_reader(b.fileno(), lambda: on("b"))
    try:
        loop.run_once()
        assert len(calls) == 1  # the removed one, and its successor, wait for a turn
        loop.run_once()
        assert calls[1:] == ["new"]
    finally:
        for s in (a, a_peer, b, b_peer, *spare):
            s.close()
        for fd in reused:
            os.close(fd)
        loop.close()
