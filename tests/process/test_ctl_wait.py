"""``kissbotctl start/stop/restart`` wait as long as the supervisor says it will.

The supervisor waits for a bot to be ready up to its ``start_timeout_sec``
(plus a margin), far longer than kissbotctl's own ``--timeout``. These tests
give kissbotctl a 1 s ``--timeout`` and a bot that needs 3 s to be ready: the
client must take the supervisor's word (its progress lines) for how long to
wait, show that wait on a terminal only, and print each bot's outcome.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from typing import Any

import pytest

from .conftest import StartFleet
from .harness import KISSBOTCTL, TIMEOUT, Supervisor, fleet_config
from .ptyexpect import PtyProgram
from .test_ctl_cli import ctl, ctl_env

READY_DELAY = "3"  # seconds the slow bot takes to be ready: 3 times the client's --timeout


@pytest.fixture
def fleet(start_fleet: StartFleet) -> Supervisor:
    doc = fleet_config(
        ["slow_bot", "quick_bot"], per_channel={"slow_bot": ["--ready-delay", READY_DELAY]}
    )
    sup = start_fleet(doc)
    for name in ("slow_bot", "quick_bot"):
        sup.wait_for(rf"{name}: ready")
    return sup


def test_restart_waits_for_a_slow_bot_past_the_clients_timeout(fleet: Supervisor) -> None:
    before = fleet.bot("slow_bot")["pid"]
    result = ctl(fleet, "--timeout", "1", "restart", "slow_bot", "quick_bot")
    assert result.returncode == 0, result.stderr
    # Each bot's outcome, one line each; nothing on stderr off a terminal.
    assert re.fullmatch(
        r"slow_bot: restarted \(PID \d+\)\nquick_bot: restarted \(PID \d+\)\n", result.stdout
    )
    assert result.stderr == ""
    assert fleet.bot("slow_bot")["pid"] != before
    assert fleet.bot("slow_bot")["state"] == "running"


def test_restart_all_json_reports_every_bot(fleet: Supervisor) -> None:
    result = ctl(fleet, "--timeout", "1", "restart", "all", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["ok"] is True
    assert {r["name"]: r["result"] for r in answer["results"]} == {
        "slow_bot": "restarted",
        "quick_bot": "restarted",
    }


def test_progress_is_shown_on_a_terminal(fleet: Supervisor) -> None:
    argv = [KISSBOTCTL, "--socket", str(fleet.control), "--timeout", "1", "restart", "slow_bot"]
    term = PtyProgram(argv, ctl_env(TERM="xterm"), columns=100)
    try:
        term.expect(r"restart: waiting for slow_bot to be ready\.\.\. \d+ s \(max \d+ s\)")
        term.expect(r"slow_bot: restarted \(PID \d+\)")
        assert term.wait() == 0
    finally:
        term.close()


def read_lines(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    buf = b""
    while buf.count(b"\n") < count:
        chunk = sock.recv(65536)
        assert chunk, f"the supervisor hung up after {buf!r}"
        buf += chunk
    return [json.loads(line) for line in buf.splitlines()[:count]]


def test_the_supervisor_says_how_long_it_waits_and_what_settled(start_fleet: StartFleet) -> None:
    # never_ready is not ready within the test: the answer itself never comes here.
    doc = fleet_config(
        ["never_ready", "quick_bot"], per_channel={"never_ready": ["--ready-delay", "600"]}
    )
    sup = start_fleet(doc)
    sup.wait_for(r"quick_bot: ready")
    sup.wait_for(r"never_ready: started")
    request = {"cmd": "restart", "names": ["never_ready", "quick_bot"], "progress": True}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(str(sup.control))
        s.sendall(json.dumps(request).encode() + b"\n")
        first, second = read_lines(s, 2)
    assert list(first) == ["progress"]
    assert first["progress"]["waiting"] == ["never_ready", "quick_bot"]
    assert first["progress"]["done"] == []
    assert first["progress"]["wait_sec"] > 60  # the start timeout (60 s) and more
    assert second["progress"]["waiting"] == ["never_ready"]
    assert [(r["name"], r["result"]) for r in second["progress"]["done"]] == [
        ("quick_bot", "restarted")
    ]
    assert second["progress"]["wait_sec"] <= first["progress"]["wait_sec"]


def test_without_progress_there_is_one_answer_line(fleet: Supervisor) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(str(fleet.control))
        s.sendall(b'{"cmd": "restart", "names": ["quick_bot", "slow_bot"]}\n')
        (answer,) = read_lines(s, 1)
        s.sendall(b'{"cmd": "status"}\n')
        (status,) = read_lines(s, 1)  # the next line answers the next request
    assert answer["ok"] is True
    assert [r["result"] for r in answer["results"]] == ["restarted", "restarted"]
    assert "status" in status


def test_help_says_how_long_start_waits() -> None:
    result = subprocess.run(
        [KISSBOTCTL, "start", "--help"], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    assert "as long as the supervisor says" in " ".join(result.stdout.split())
