"""kissbot_supervisor.notify: watchdog pacing with explicit times, sends to real sockets."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator

import pytest

from kissbot_supervisor import notify

NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@pytest.fixture(autouse=True)
def _no_inherited_notify_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite itself may run under systemd; its variables are not the test's.
    for name in NOTIFY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound abstract-namespace datagram socket, announced in NOTIFY_SOCKET with '@'."""
    name = f"kissbot-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5.0)  # a safety limit; sends are synchronous and already queued
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        yield sock
    finally:
        sock.close()


def queued(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on ``sock``, without blocking."""
    found = []
    sock.setblocking(False)
    try:
        while True:
            found.append(sock.recv(4096))
    except BlockingIOError:
        return found
    finally:
        sock.settimeout(5.0)


# -- watchdog_interval ---------------------------------------------------


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    assert notify.watchdog_interval() == 1.5


def test_watchdog_interval_accepts_our_own_watchdog_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval() == 0.5


@pytest.mark.parametrize("pid", ["1", "not-a-pid"])
def test_watchdog_interval_is_off_for_another_process(
    monkeypatch: pytest.MonkeyPatch, pid: str
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", pid)
    assert notify.watchdog_interval() is None


@pytest.mark.parametrize("usec", [None, "", "0", "-5", "soon"])
def test_watchdog_interval_is_off_without_a_usable_watchdog_usec(
    monkeypatch: pytest.MonkeyPatch, usec: str | None
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    assert notify.watchdog_interval() is None


# -- WatchdogPinger ------------------------------------------------------


def test_pinger_pings_at_once_then_once_per_interval() -> None:
    pinger = notify.WatchdogPinger(5.0, now=100.0)
    assert pinger.next_due() == 100.0
    assert pinger.ping_if_due(now=100.0) is True
    assert pinger.next_due() == 105.0
    assert pinger.ping_if_due(now=104.9) is False
    assert pinger.ping_if_due(now=105.0) is True
    assert pinger.next_due() == 110.0


def test_pinger_paces_from_the_late_ping_after_a_stall() -> None:
    pinger = notify.WatchdogPinger(5.0, now=100.0)
    assert pinger.ping_if_due(now=100.0)
    # The loop stalled for 30 s: one ping now, not six to catch up.
    assert pinger.ping_if_due(now=130.0)
    assert not pinger.ping_if_due(now=130.0)
    assert pinger.next_due() == 135.0


def test_pinger_seconds_until_due_never_negative_and_capped_by_default() -> None:
    pinger = notify.WatchdogPinger(5.0, now=100.0)
    assert pinger.seconds_until_due(now=120.0) == 0.0
    pinger.ping_if_due(now=120.0)
    assert pinger.seconds_until_due(now=122.0) == 3.0
    assert pinger.seconds_until_due(default=1.0, now=122.0) == 1.0


def test_pinger_reads_the_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    assert notify.WatchdogPinger(now=0.0).interval == 2.0


def test_pinger_without_watchdog_never_pings() -> None:
    pinger = notify.WatchdogPinger(now=0.0)
    assert pinger.interval is None
    assert pinger.next_due() is None
    assert pinger.seconds_until_due(default=30.0, now=0.0) == 30.0
    assert pinger.ping_if_due(now=1e9) is False


def test_pinger_rejects_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval must be > 0"):
        notify.WatchdogPinger(0.0)


def test_pinger_sends_watchdog_datagrams(listener: socket.socket) -> None:
    pinger = notify.WatchdogPinger(1.0, now=0.0)
    assert pinger.ping_if_due(now=0.0)
    assert not pinger.ping_if_due(now=0.5)
    assert pinger.ping_if_due(now=1.0)
    assert queued(listener) == [b"WATCHDOG=1", b"WATCHDOG=1"]


# -- sending -------------------------------------------------------------


def test_each_call_sends_its_assignment(listener: socket.socket) -> None:
    notify.ready()
    notify.status("joined #alpha")
    notify.watchdog_ping()
    notify.stopping()
    assert queued(listener) == [b"READY=1", b"STATUS=joined #alpha", b"WATCHDOG=1", b"STOPPING=1"]


def test_status_is_one_line_of_utf8(listener: socket.socket) -> None:
    notify.status("café ☕\nsecond line")
    assert listener.recv(4096) == "STATUS=café ☕ second line".encode()


def test_sends_to_a_filesystem_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    # A short base directory: AF_UNIX paths are limited to 107 bytes.
    path = f"/tmp/kb-notify-{uuid.uuid4().hex[:12]}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.settimeout(5.0)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        notify.ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()
        if os.path.exists(path):
            os.unlink(path)


def test_a_vanished_supervisor_neither_raises_nor_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", f"/tmp/kb-gone-{uuid.uuid4().hex}.sock")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notify.ready()
        notify.status("still here")
        notify.WatchdogPinger(1.0, now=0.0).ping_if_due(now=0.0)
        gc.collect()
    assert [w.message for w in caught] == []


def test_without_notify_socket_nothing_is_imported_or_sent() -> None:
    # In a fresh interpreter: this process has imported socket long ago.
    code = (
        "import sys\n"
        "from kissbot_supervisor import notify\n"
        "notify.ready(); notify.status('x'); notify.stopping(); notify.watchdog_ping()\n"
        "heavy = {'socket', 'sdnotify', 'asyncio', 'yaml', 'typing', 'logging'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in NOTIFY_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
