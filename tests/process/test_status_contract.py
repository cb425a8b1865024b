"""The daemon's STATUS object, live, held to its one definition (status.py)."""

from __future__ import annotations

from kissbot_supervisor.status import LIVE_SUPERVISOR_KEYS, PROCESS_KEYS, STATUS_KEYS

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
