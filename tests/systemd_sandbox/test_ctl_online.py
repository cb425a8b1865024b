"""``kissbotctl`` against a supervisor running as ``kissbot-supervisor.service`` in a real systemd.

Every command is run inside the sandbox with the default socket
(``/run/kissbot-supervisor/control.sock``, the unit's RuntimeDirectory), as an
operator on that machine would: status, start, stop, restart (``--json``
parsed), metrics, and a live ``events`` stream while systemd restarts a bot.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from kissbot_supervisor.protocol import EVENT_KEYS
from linewatch import EOF_MARK, Follower

from .fleet import BIN, TIMEOUT, Fleet, config, start
from .sandbox import SystemdSandbox

KISSBOTCTL = str(BIN / "kissbotctl")


def events_stream(sandbox: SystemdSandbox, *args: str) -> Follower:
    """``kissbotctl events --json ARGS`` inside the sandbox, its lines collected as they come."""
    argv = ["nsenter", "-t", str(sandbox.pid1), "-m", "-p", "-u", "--",
            KISSBOTCTL, "events", "--json", *args]  # fmt: skip
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    return Follower(argv, "kissbotctl events", TIMEOUT, env=env)


def events_of(stream: Follower, since: int = 0) -> list[dict[str, object]]:
    return [json.loads(x) for x in stream.out.lines[since:] if x != EOF_MARK]


@pytest.fixture
def streams() -> Iterator[list[Follower]]:
    started: list[Follower] = []
    yield started
    for stream in started:
        stream.close()


def test_status_start_stop_restart_metrics(fleet: Fleet) -> None:
    start(fleet, config(["online_one", "online_two"]))
    for name in ("online_one", "online_two"):
        fleet.journal.wait_for(rf"{name}: ready")
    status = json.loads(fleet.ctl("status", "--json").stdout)
    assert status["backend"] == "systemd"
    assert "source" not in status  # from the supervisor, not read from systemd
    human = fleet.ctl("status")
    assert human.returncode == 0, human.stderr
    assert "2/2 bots running" in human.stdout
    assert all(len(line) <= 80 for line in human.stdout.splitlines())

    stop = fleet.ctl("stop", "online_two", "--json")
    assert stop.returncode == 0, stop.stderr
    result = json.loads(stop.stdout)["results"][0]
    assert (result["name"], result["ok"], result["state"]) == ("online_two", True, "stopped")
    assert fleet.show("kissbot-bot@online_two.service", "ActiveState")["ActiveState"] != "active"

    started = json.loads(fleet.ctl("start", "online_two", "--json").stdout)["results"][0]
    assert (started["result"], started["state"]) == ("started", "running")
    unit = fleet.show("kissbot-bot@online_two.service", "MainPID", "ActiveState")
    assert unit["ActiveState"] == "active"
    assert int(unit["MainPID"]) == started["pid"]

    before = fleet.bot("online_one")["pid"]
    restart = fleet.ctl("restart", "online_one")
    assert restart.returncode == 0, restart.stderr
    assert re.fullmatch(r"online_one: restarted \(PID \d+\)\n", restart.stdout)
    assert fleet.bot("online_one")["pid"] != before

    unknown = fleet.ctl("restart", "nobody_here")
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert len(unknown.stderr.splitlines()) == 1
    assert "'nobody_here'" in unknown.stderr

    metrics = fleet.ctl("metrics")
    assert metrics.returncode == 0, metrics.stderr
    assert re.search(r'^kissbot_up\{process="online_one"\} 1$', metrics.stdout, re.M)


def test_events_while_systemd_restarts_a_bot(fleet: Fleet, streams: list[Follower]) -> None:
    start(fleet, config(["eventful", "bystander"]))
    for name in ("eventful", "bystander"):
        fleet.journal.wait_for(rf"{name}: ready")
    watch = events_stream(fleet.sandbox, "eventful")
    streams.append(watch)
    # Subscribed in its own time: restart (which waits for its outcome) until seen.
    for _ in range(100):
        assert fleet.ctl("restart", "eventful").returncode == 0
        if watch.out.seen(r'"kind": "ready"'):
            break
    else:
        raise AssertionError("no event reached kissbotctl events")

    mark = watch.out.mark()
    fleet.ctl("restart", "bystander")  # filtered out
    fleet.sandbox.systemctl("kill", "--signal=SIGKILL", "kissbot-bot@eventful.service")
    watch.out.wait_for(r'"kind": "exited"', since=mark)
    watch.out.wait_for(r'"kind": "ready"', since=mark)
    events = events_of(watch, mark)
    assert all(list(e) == list(EVENT_KEYS) for e in events)
    assert {e["name"] for e in events} == {"eventful"}
    exited = next(e for e in events if e["kind"] == "exited")
    assert "SIGKILL" in str(exited["message"])
    assert events[-1]["pid"] == fleet.bot("eventful")["pid"]

    # Ctrl-C ends the stream quietly: SIGINT to kissbotctl itself (nsenter's child),
    # whose exit status nsenter passes on.
    children = Path(f"/proc/{watch.proc.pid}/task/{watch.proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    os.kill(int(children[0]), signal.SIGINT)
    assert watch.proc.wait(TIMEOUT) == 130
    assert watch.proc.stderr is not None
    assert watch.proc.stderr.read() == ""
