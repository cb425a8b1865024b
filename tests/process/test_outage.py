"""A network outage heals by itself: parked bots are tried again (core/machine.py).

"Twitch" is a loopback TCP listener (:class:`StandInTwitch`) that the demo bots
connect to at start-up (``--twitch``), as the real bot connects to Twitch chat:
when nobody listens, a bot exits 1 with aiohttp's words, as the real one does.
Closing the listener is the outage; listening again on the same port ends it.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from linewatch import wait_until
from process.harness import Supervisor, fleet_config

from .conftest import StartFleet

# The bots' own last line while "Twitch" is down (the demo's copy of aiohttp's).
CANNOT_CONNECT = (
    r"aiohttp\.client_exceptions\.ClientConnectorError: Cannot connect to host "
    r"irc\.chat\.twitch\.tv:6697 ssl:default \[Connect call failed \('127\.0\.0\.1', {port}\)\]"
)


class StandInTwitch:
    """A loopback listener that accepts each connection and closes it."""

    def __init__(self) -> None:
        self.port = 0
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.listen()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def listen(self) -> None:
        """Twitch is reachable (again, on the same port)."""
        server = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: port again
        self.port = server.getsockname()[1]
        self._server = server
        self._thread = threading.Thread(target=self._serve, args=(server,), daemon=True)
        self._thread.start()

    def _serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # shut down: the outage began
                return
            conn.close()

    def outage(self) -> None:
        """Nobody listens: every connection is refused."""
        assert self._server is not None
        assert self._thread is not None
        self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux)
        self._thread.join(5)
        self._server.close()
        self._server = None

    def close(self) -> None:
        if self._server is not None:
            self.outage()


@pytest.fixture
def twitch() -> Iterator[StandInTwitch]:
    stand_in = StandInTwitch()
    try:
        yield stand_in
    finally:
        stand_in.close()


def kill_every_bot(sup: Supervisor, names: list[str]) -> None:
    """The bots lose Twitch: gone (they restart into the outage)."""
    for name in names:
        os.kill(sup.bot(name)["pid"], signal.SIGKILL)


def test_bots_parked_by_an_outage_run_again_once_it_is_over(
    start_fleet: StartFleet, twitch: StandInTwitch
) -> None:
    names = ["outage_one", "outage_two", "outage_three"]
    doc = fleet_config(names, bot_extra=["--twitch", twitch.address])
    doc["supervisor"]["restart"].update(
        {"give_up_after": 2, "retry_parked_sec": 1, "retry_parked_max_sec": 2}
    )
    sup = start_fleet(doc)
    for name in names:
        sup.wait_for(rf"{name}: ready")
    twitch.outage()
    kill_every_bot(sup, names)
    words = CANNOT_CONNECT.format(port=twitch.port)
    # Said once for the fleet, in the bots' own words.
    sup.wait_for(rf'supervisor: 3 bots failing alike: "{words}"')
    sup.wait_for(r"outage_one: failed 2 times within .*; trying again by itself in 1\.0 s")
    sup.wait_for(r"outage_two: .*trying again by itself")
    sup.wait_for(r"outage_one: trying again after being parked")
    sup.wait_for(r"outage_one: exited 1 again, when tried after being parked")
    parked = sup.bot("outage_one")
    assert parked["state"] == "failed"
    # Why, in the bot's own words (its last line), and when it is tried again.
    assert "Cannot connect to host irc.chat.twitch.tv:6697 ssl:default" in parked["reason"]
    assert "trying again by itself in" in parked["reason"]
    wait_until(
        lambda: "3 failing alike" in sup.status()["supervisor"]["summary"],
        what="the fleet's summary",  # (a bot being tried is briefly not counted)
    )
    twitch.listen()  # Twitch is back: nobody runs kissbotctl
    for name in names:
        wait_until(lambda n=name: sup.bot(n)["state"] == "running", what=f"{name} back")  # type: ignore[misc]


OUTAGE_SEC = float(os.environ.get("KISSBOT_OUTAGE_SECONDS", "120"))


@pytest.mark.soak
def test_a_two_minute_outage_heals_by_itself_with_the_default_settings(
    start_fleet: StartFleet, twitch: StandInTwitch
) -> None:
    """A whole fleet parked by a 2-minute outage (KISSBOT_OUTAGE_SECONDS) runs again
    with the shipped restart and pacing defaults, and no operator."""
    names = [f"outage_{i:02d}" for i in range(10)]
    doc = fleet_config(
        names,
        bot_extra=["--twitch", twitch.address],
        # The shipped defaults, not the harness's quick ones.
        supervisor={
            "bot": {"logins_per_10s": 20},
            "restart": {
                "delay_sec": 1,
                "max_delay_sec": 60,
                "give_up_after": 5,
                "retry_parked_sec": 120,
            },
        },
    )
    sup = start_fleet(doc)
    for name in names:
        sup.wait_for(rf"{name}: ready", timeout=60)
    twitch.outage()
    down_at = time.monotonic()
    began = sup.mark()
    kill_every_bot(sup, names)
    sup.wait_for(r"supervisor: \d+ bots failing alike: .*Cannot connect to host", since=began)

    def parked() -> int:
        return sum(b["state"] == "failed" for b in sup.status()["bots"])

    wait_until(lambda: parked() == len(names), what="every bot parked", timeout=OUTAGE_SEC)
    assert "trying again by itself" in sup.bot(names[0])["reason"]
    # The outage lasts its time whatever the bots do (the scenario, not a wait for a
    # state): a sleep is right here.
    time.sleep(max(0.0, OUTAGE_SEC - (time.monotonic() - down_at)))
    twitch.listen()
    for name in names:
        wait_until(
            lambda n=name: sup.bot(n)["state"] == "running",  # type: ignore[misc]
            what=f"{name} running again without an operator",
            timeout=1000.0,  # restart.retry_parked_max_sec (900) bounds it
        )
    assert not sup.seen(r"requested")  # no start, stop or restart command was given
