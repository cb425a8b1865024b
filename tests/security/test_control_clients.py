"""Clients of the control socket (operators: trusted to ask, not to behave) cannot
stall supervision, grow the supervisor, or lock the other operators out."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kissbot_supervisor.daemon.control import MAX_CLIENTS
from process.harness import TIMEOUT, Supervisor, fleet_config

from .conftest import StartFleet

MIB = 1024 * 1024


def rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def connect(sup: Supervisor, opened: list[socket.socket]) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    opened.append(s)
    s.connect(str(sup.control))  # blocking: waits for room in the listen backlog
    s.settimeout(TIMEOUT)
    return s


def test_clients_that_pipeline_and_never_read_stall_nothing(
    start_fleet: StartFleet, sockets: list[socket.socket]
) -> None:
    sup = start_fleet(fleet_config(["steady_bot", "crashy_bot"]), give=False)
    sup.wait_for(r"steady_bot: ready")
    sup.wait_for(r"crashy_bot: ready")
    sup.status()
    before = rss(sup.proc.pid)
    flood = b'{"cmd": "status"}\n' * 3000
    for _ in range(60):
        s = connect(sup, sockets)
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # what the kernel takes; never reads
            s.send(flood)
    mark = sup.mark()
    os.kill(sup.bot("crashy_bot")["pid"], signal.SIGKILL)
    sup.wait_for(r"crashy_bot: started", since=mark)  # supervision goes on
    sup.wait_for(r"crashy_bot: ready", since=mark)
    assert sup.status()["bots"][1]["state"] == "running"  # and a new operator is answered
    # Each stuck client is owed at most what the kernel buffers: the supervisor's
    # own memory holds one answer per client, not 3000.
    assert rss(sup.proc.pid) - before < 32 * MIB


def test_idle_connections_never_lock_an_operator_out(
    start_fleet: StartFleet, sockets: list[socket.socket]
) -> None:
    sup = start_fleet(fleet_config(["lonely_bot"]), give=False)
    sup.wait_for(r"lonely_bot: ready")
    sup.status()
    for _ in range(MAX_CLIENTS + 8):
        connect(sup, sockets)  # connected, then silent
    # A new operator is served all the same: the longest idle makes room.
    operator = connect(sup, sockets)
    operator.sendall(b'{"cmd": "status"}\n')
    answer = json.loads(operator.makefile("rb").readline())
    assert answer["ok"] is True
    assert json.dumps(answer["status"]["bots"][0]["channel"]) == '"lonely_bot"'
