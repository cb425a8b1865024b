"""Events and metrics with the systemd backend (the supervisor as a unit in the sandbox).

The control socket is put in the workdir, which the sandbox shares with this
process, so the test subscribes to events from outside; the bot is crashed
with ``systemctl kill -s KILL`` inside.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kissbot_supervisor.protocol import EVENT_KEYS, parse_event

from .fleet import TIMEOUT, Fleet, config, start


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(str(path))
    return sock


def _request(path: Path, obj: dict[str, Any]) -> dict[str, Any]:
    with _connect(path) as sock, sock.makefile("rb") as f:
        sock.sendall(json.dumps(obj).encode() + b"\n")
        answer: dict[str, Any] = json.loads(f.readline())
        return answer


def test_events_for_a_crash_and_metrics_parsed(fleet: Fleet) -> None:
    control = fleet.workdir / "control.sock"
    doc = config(["event_bot"], hub=False, supervisor={"control_socket": str(control)})
    start(fleet, doc)
    fleet.journal.wait_for(r"event_bot: ready")
    with _connect(control) as sock, sock.makefile("rb") as stream:
        sock.sendall(b'{"cmd":"events"}\n')
        assert json.loads(stream.readline()) == {"ok": True, "subscribed": True}

        def until(kind: str) -> dict[str, Any]:
            while True:
                line = stream.readline()
                assert line, "the events stream ended"
                event = parse_event(line)
                assert tuple(event) == EVENT_KEYS
                if event["name"] == "event_bot" and event["kind"] == kind:
                    return event

        fleet.sandbox.systemctl("kill", "-s", "KILL", "kissbot-bot@event_bot.service")
        exited = until("exited")
        assert exited["message"].startswith("killed by SIGKILL")
        assert exited["pid"] is None
        assert until("backoff")["state"] == "backoff"
        started = until("started")
        assert started["restarts"] == 1
        assert until("ready")["state"] == "running"

    response = _request(control, {"cmd": "metrics"})
    assert response["ok"] is True
    got = {
        (s.name, s.labels.get("process", "")): (s.value, s.labels)
        for family in text_string_to_metric_families(response["metrics"])
        for s in family.samples
    }
    assert got[("kissbot_up", "event_bot")][0] == 1
    assert got[("kissbot_ready", "event_bot")][0] == 1
    assert got[("kissbot_restarts_total", "event_bot")][0] == 1
    # The supervisor reads the unit's main PID in /proc like its own children's.
    assert got[("kissbot_memory_bytes", "event_bot")][0] > 0
    assert ("kissbot_cpu_seconds_total", "event_bot") in got
    assert got[("kissbot_supervisor_build_info", "")][1]["backend"] == "systemd"
