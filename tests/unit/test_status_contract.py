"""The STATUS object has one definition (status.py): both producers are held to it.

The daemon's side is checked on a live supervisor in
tests/process/test_status_contract.py; here, the builders and the object
``kissbotctl status`` makes from systemd's view when the supervisor is down.
"""

from __future__ import annotations

from kissbot_supervisor.backends.systemd.messages import UnitInfo
from kissbot_supervisor.cli.offline import UnitState, build_status
from kissbot_supervisor.status import (
    EXIT_KEYS,
    OFFLINE_SOURCE,
    OFFLINE_SUPERVISOR_KEYS,
    PROCESS_KEYS,
    STATUS_KEYS,
    SYSTEMD_UNIT_KEYS,
    process_entry,
    status_object,
)


def unit(name: str, active: str = "active", sub: str = "running", pid: int = 0) -> UnitState:
    info = UnitInfo(name, "", "loaded", active, sub, "", f"/u/{name}", 0, "", "/")
    service: dict[str, object] = {
        "MainPID": pid, "NRestarts": 2, "Result": "success", "ExecMainStartTimestamp": 0,
        "ExecStart": [("/usr/bin/python3", ["python3", "main.py"], False, 0, 0, 0, 0, 0, 0, 0)],
    }  # fmt: skip
    if active == "failed":
        service.update(ExecMainExitTimestamp=990_000_000, ExecMainCode=1, ExecMainStatus=1)
    return UnitState(info, {"StateChangeTimestamp": 995_000_000}, service)


def test_the_builders_write_the_documented_keys_in_order() -> None:
    entry = process_entry(
        "el_serda", state="running", want=True, pid=42, uptime_s=1.23456, restarts=0,
        rss_bytes=None, last_exit="exited 1", token_state="valid", reason=None, status_text=None,
        since=1764000000.12345, argv=("python3", "main.py"),
        exits=[{"time": 1763999990.5, "exit": "exited 1"}],
    )  # fmt: skip
    assert tuple(entry) == PROCESS_KEYS
    assert entry["uptime_s"] == 1.235
    assert entry["since"] == 1764000000.123
    assert entry["argv"] == ["python3", "main.py"]  # a list, as JSON has
    assert [tuple(e) for e in entry["exits"]] == [EXIT_KEYS]
    hub = process_entry(
        "hub", state="running", want=True, pid=41, uptime_s=None, restarts=0,
        rss_bytes=None, last_exit=None, token_state=None, reason=None, status_text=None,
        since=None, argv=None, exits=[],
    )  # fmt: skip
    status = status_object("native", {"pid": 1}, [entry, hub])
    assert tuple(status) == STATUS_KEYS
    assert status["hub"] is hub
    assert [tuple(b) for b in status["bots"]] == [("channel", *PROCESS_KEYS)]
    assert status["bots"][0]["channel"] == "el_serda"
    offline = status_object("systemd", {"running": False}, [], source=OFFLINE_SOURCE)
    assert tuple(offline) == ("backend", "source", *STATUS_KEYS[1:])
    assert (offline["hub"], offline["bots"]) == (None, [])


def test_status_read_from_systemd_keeps_the_contract() -> None:
    units = [
        unit("kissbot-bot@zeta_chan.service", pid=7),
        unit("kissbot-supervisor.service", "inactive", "dead"),
        unit("kissbot-hub.service", pid=5),
        unit("kissbot-bot@alpha_chan.service", "failed", "failed"),
        unit("run-credentials-x.mount"),  # not ours: ignored
    ]
    status = build_status(units, now=1000.0)
    assert tuple(status) == ("backend", "source", *STATUS_KEYS[1:])
    assert status["source"] == OFFLINE_SOURCE
    assert tuple(status["supervisor"]) == OFFLINE_SUPERVISOR_KEYS
    hub = status["hub"]
    assert hub is not None
    assert tuple(hub) == (*PROCESS_KEYS, *SYSTEMD_UNIT_KEYS)
    assert [b["channel"] for b in status["bots"]] == ["alpha_chan", "zeta_chan"]
    for bot in status["bots"]:
        assert tuple(bot) == ("channel", *PROCESS_KEYS, *SYSTEMD_UNIT_KEYS)
    assert status["bots"][0]["state"] == "failed"
    assert status["bots"][1]["pid"] == 7
    # since when, the command line and the last exit, as systemd knows them
    failed = status["bots"][0]
    assert failed["since"] == 995.0
    assert failed["argv"] == ["python3", "main.py"]
    assert failed["exits"] == [{"time": 990.0, "exit": "exited 1"}]
    assert status["bots"][1]["exits"] == []


def test_every_key_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `status` |"))
    for key in (*STATUS_KEYS, *PROCESS_KEYS, *EXIT_KEYS, *SYSTEMD_UNIT_KEYS):
        assert f"`{key}`" in row, key
