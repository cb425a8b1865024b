"""A network outage heals by itself: parked bots are tried again (core/machine.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from linewatch import wait_until
from process.harness import fleet_config

from .conftest import StartFleet


def test_bots_parked_by_an_outage_run_again_once_it_is_over(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    # Like the real bot: exit 1 at start-up while "Twitch" cannot be reached.
    outage = tmp_path / "twitch-unreachable"
    names = ["outage_one", "outage_two", "outage_three"]
    doc = fleet_config(names)
    bot = doc["supervisor"]["bot"]
    script = (
        f'if [ -e "{outage}" ]; then echo "Cannot connect to host irc.chat.twitch.tv" >&2; '
        'exit 1; fi; exec "$@"'
    )
    bot["command"] = ["sh", "-c", script, "bot", *bot["command"]]
    doc["supervisor"]["restart"].update(
        {"give_up_after": 2, "retry_parked_sec": 1, "retry_parked_max_sec": 2}
    )
    sup = start_fleet(doc)
    for name in names:
        sup.wait_for(rf"{name}: ready")
    outage.touch()
    for name in names:
        os.kill(sup.bot(name)["pid"], signal.SIGKILL)
    # Said once for the fleet, in the bots' own words.
    sup.wait_for(
        r'supervisor: 3 bots failing alike: "Cannot connect to host irc\.chat\.twitch\.tv"'
    )
    sup.wait_for(r"outage_one: failed 2 times within .*; trying again by itself in 1\.0 s")
    sup.wait_for(r"outage_two: .*trying again by itself")
    sup.wait_for(r"outage_one: trying again after being parked")
    sup.wait_for(r"outage_one: exited 1 again, when tried after being parked")
    parked = sup.bot("outage_one")
    assert parked["state"] == "failed"
    # Why, in the bot's own words (its last line), and when it is tried again.
    assert '"Cannot connect to host irc.chat.twitch.tv"' in parked["reason"]
    assert "trying again by itself in" in parked["reason"]
    wait_until(
        lambda: "3 failing alike" in sup.status()["supervisor"]["summary"],
        what="the fleet's summary",  # (a bot being tried is briefly not counted)
    )
    outage.unlink()  # Twitch is back: nobody runs kissbotctl
    for name in names:
        wait_until(lambda n=name: sup.bot(n)["state"] == "running", what=f"{name} back")  # type: ignore[misc]
