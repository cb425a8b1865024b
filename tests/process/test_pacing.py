"""Twitch's login limit on a live native fleet: bot starts are paced (core/machine.py)."""

from __future__ import annotations

import re
import time

from linewatch import wait_until
from process.harness import fleet_config

from .conftest import StartFleet

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\w+): started \(PID")


def _started_at(lines: list[str]) -> dict[str, float]:
    out = {}
    for line in lines:
        m = STAMP.match(line)
        if m:
            out[m.group(2)] = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
    return out


def test_the_third_bot_waits_for_a_login_slot(start_fleet: StartFleet) -> None:
    names = ["paced_one", "paced_two", "paced_three"]
    sup = start_fleet(fleet_config(names, supervisor={"bot": {"logins_per_10s": 2}}))
    sup.wait_for(r"paced_one: ready")
    sup.wait_for(r"paced_two: ready")
    third = sup.bot("paced_three")
    assert third["pid"] is None
    assert third["state"] == "starting"
    assert third["reason"].startswith("waiting for a login slot")
    sup.wait_for(r"paced_three: ready")
    started = _started_at(sup.log.lines)
    # The log's own clock (to the second): 12 s after the first start, less rounding.
    assert started["paced_three"] - min(started["paced_one"], started["paced_two"]) >= 11
    wait_until(lambda: sup.bot("paced_three")["reason"] is None, what="the reason cleared")
