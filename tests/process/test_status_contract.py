"""The daemon's STATUS object, live, held to its one definition (status.py)."""

from __future__ import annotations

import time

from kissbot_supervisor.daemon.history import EXITS_KEPT
from kissbot_supervisor.status import EXIT_KEYS, LIVE_SUPERVISOR_KEYS, PROCESS_KEYS, STATUS_KEYS

from .conftest import StartFleet
from .harness import fleet_config


def test_the_live_status_object_keeps_the_contract(start_fleet: StartFleet) -> None:
    sup = start_fleet(fleet_config(["contract_one", "contract_two"], hub=True))
    sup.wait_for(r"contract_one: ready")
    sup.wait_for(r"contract_two: ready")
    status = sup.status()
    assert tuple(status) == STATUS_KEYS
    assert tuple(status["supervisor"]) == LIVE_SUPERVISOR_KEYS
    assert tuple(status["hub"]) == (*PROCESS_KEYS, "socket")
    assert [tuple(b) for b in status["bots"]] == [("channel", *PROCESS_KEYS)] * 2
    assert [b["channel"] for b in status["bots"]] == ["contract_one", "contract_two"]


ROUNDING = 0.001  # times in the STATUS object are rounded to the millisecond


def test_the_live_status_keeps_since_argv_and_the_last_exits(start_fleet: StartFleet) -> None:
    doc = fleet_config(
        ["steady_one", "broken_bot"],
        per_channel={"broken_bot": ["--exit-code", "3"]},
        supervisor={"restart": {"delay_sec": 0.05, "give_up_after": 7}},
    )
    before = time.time() - ROUNDING
    sup = start_fleet(doc)
    sup.wait_for(r"steady_one: ready")
    sup.wait_for(r"broken_bot: exited 3 7 times")
    after = time.time() + ROUNDING
    status = sup.status()
    steady, broken = status["bots"]
    assert steady["exits"] == []
    assert before <= steady["since"] <= after  # running: since its start
    assert "steady_one" in steady["argv"]  # the command line, its channel filled in
    assert broken["state"] == "failed"
    assert before <= broken["since"] <= after
    # Bounded: the last EXITS_KEPT of its seven exits, oldest first.
    exits = broken["exits"]
    assert len(exits) == EXITS_KEPT
    assert [tuple(e) for e in exits] == [EXIT_KEYS] * EXITS_KEPT
    assert {e["exit"] for e in exits} == {"exited 3"}
    times = [e["time"] for e in exits]
    assert times == sorted(times)
    assert before <= times[0]
    assert times[-1] <= broken["since"] <= after  # failed since its last exit
