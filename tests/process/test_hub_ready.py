"""A hub that is "ready" must serve bots (issue 13, part 4).

The real hub binds its socket before its Twitch WebSocket is up; without Twitch
it accepts connections and answers nothing, ignores SIGTERM and leaves
``hub_state.ws_state`` at ``connecting``. The demo hub's ``--wedge`` does the
same. First the readiness watcher alone, on a real loop against the real demo
hub; then the whole supervisor.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fixtures.kissbot_db import KissbotDb
from kissbot_supervisor.kissbot.readiness import ReadinessWatcher
from kissbot_supervisor.runtime.log import Log
from kissbot_supervisor.runtime.loop import Loop

from .conftest import StartFleet
from .harness import TIMEOUT, fleet_config

DemoHub = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def demo_hub(tmp_path: Path) -> Iterator[DemoHub]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "kissbot_supervisor.demo", "hub"]
        argv += ["--socket", str(tmp_path / "hub.sock"), "--db", str(tmp_path / "kissbot.db")]
        proc = subprocess.Popen([*argv, *extra], cwd=tmp_path, stderr=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()  # a wedged hub ignores SIGTERM
        proc.wait()


class Watched:
    """A ReadinessWatcher on its own loop, and what it reported."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = Loop()
        (tmp_path / "pids").mkdir(exist_ok=True)
        self.ready: list[str] = []
        self.waiting: list[str] = []
        self.alive: list[str] = []
        self.watcher = ReadinessWatcher(
            self.loop,
            tmp_path / "pids",
            tmp_path / "hub.sock",
            self.ready.append,
            Log(),
            lambda _name, why: self.waiting.append(why),
            tmp_path / "kissbot.db",
            self.alive.append,
        )

    def run_until(self, done: Callable[[], bool]) -> None:
        """Turn the loop until ``done``; the deadline only bounds a broken run."""
        deadline = time.monotonic() + TIMEOUT
        while not done():
            assert time.monotonic() < deadline, (self.ready, self.waiting)
            self.loop.run_once()

    def close(self) -> None:
        self.watcher.close()
        self.loop.close()


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Watched]:
    w = Watched(tmp_path)
    yield w
    w.close()


def test_protocol_a_serving_hub_is_ready_on_its_pong(demo_hub: DemoHub, watched: Watched) -> None:
    hub = demo_hub()
    watched.watcher.watch("hub", "protocol", lambda: hub.pid)
    watched.run_until(lambda: watched.ready == ["hub"])
    assert watched.waiting == []


def test_protocol_a_wedged_hub_is_never_ready_and_says_why(
    demo_hub: DemoHub, watched: Watched
) -> None:
    hub = demo_hub("--wedge")
    watched.watcher.watch("hub", "protocol", lambda: hub.pid)
    watched.run_until(lambda: bool(watched.waiting))
    assert watched.ready == []
    assert "accepts connections on" in watched.waiting[0]
    assert "sent no pong within 2 s to hello + ping" in watched.waiting[0]
    # It tries again, and a wedged hub stays not ready; the same reason is given once.
    first_try = watched.loop.now()
    watched.run_until(lambda: watched.loop.now() > first_try + 4)
    assert watched.ready == []
    assert len(watched.waiting) == 1


def test_socket_mode_cannot_tell_a_wedged_hub(demo_hub: DemoHub, watched: Watched) -> None:
    # Why `socket` is not the default: the wedged hub accepts, so it passes.
    hub = demo_hub("--wedge")
    watched.watcher.watch("hub", "socket", lambda: hub.pid)
    watched.run_until(lambda: watched.ready == ["hub"])


def test_db_a_hub_connected_to_twitch_is_ready(
    demo_hub: DemoHub, watched: Watched, tmp_path: Path
) -> None:
    KissbotDb.create(tmp_path / "kissbot.db")  # ws_state 'down' until the hub writes it
    hub = demo_hub("--ready-delay", "1")
    watched.watcher.watch("hub", "db", lambda: hub.pid)
    watched.run_until(lambda: watched.ready == ["hub"])


def test_db_a_wedged_hub_shows_its_ws_state(
    demo_hub: DemoHub, watched: Watched, tmp_path: Path
) -> None:
    db = KissbotDb.create(tmp_path / "kissbot.db")
    hub = demo_hub("--wedge")
    watched.watcher.watch("hub", "db", lambda: hub.pid)
    watched.run_until(lambda: any("'connecting'" in why for why in watched.waiting))
    assert watched.ready == []
    assert "hub_state has ws_state 'connecting' in" in watched.waiting[-1]
    # The DB is only read: once the hub (here: the test) writes 'connected', it is ready.
    with db.connect() as conn:
        conn.execute("UPDATE hub_state SET value = 'connected' WHERE key = 'ws_state'")
    watched.run_until(lambda: watched.ready == ["hub"])


def test_db_without_the_db_says_so(demo_hub: DemoHub, watched: Watched, tmp_path: Path) -> None:
    hub = demo_hub()
    watched.watcher.watch("hub", "db", lambda: hub.pid)
    watched.run_until(lambda: bool(watched.waiting))
    assert watched.waiting[0] == (
        f"not ready: hub.ready is db, but the token DB {tmp_path / 'kissbot.db'} does not exist"
    )
    assert watched.ready == []


def test_liveness_repeats_the_check_until_the_hub_stops_answering(
    demo_hub: DemoHub, watched: Watched
) -> None:
    # The demo hub serves, then hangs (no pong, socket still bound) 3 s after ready.
    hub = demo_hub("--hang-after", "3")
    watched.watcher.watch("hub", "protocol", lambda: hub.pid, every=0.5)
    watched.run_until(lambda: watched.ready == ["hub"])
    watched.run_until(lambda: len(watched.alive) >= 3)  # checked again and again
    assert watched.ready == ["hub"]  # ready once
    watched.run_until(lambda: bool(watched.waiting))
    assert watched.waiting[0].startswith("liveness check failed: the hub accepts connections")
    alive = len(watched.alive)
    later = watched.loop.now() + 3  # several more checks, none passing
    watched.run_until(lambda: watched.loop.now() > later)
    assert len(watched.alive) == alive


def test_a_hub_that_refuses_the_probe_is_not_ready_and_its_words_are_shown(
    watched: Watched, tmp_path: Path
) -> None:
    # A listener of this very process (so it passes the owner check) that answers
    # every line with an error and hangs up, on the watcher's own loop.
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "hub.sock"))
    server.listen(8)
    server.setblocking(False)

    def refuse() -> None:
        conn, _ = server.accept()
        conn.sendall(b'{"type":"error","cmd":"hello","code":"hub_full","detail":"no room"}\n')
        conn.close()

    watched.loop.add_reader(server.fileno(), refuse)
    try:
        watched.watcher.watch("hub", "protocol", os.getpid)
        watched.run_until(lambda: bool(watched.waiting))
    finally:
        watched.loop.remove_reader(server.fileno())
        server.close()
    assert watched.waiting == [
        f"not ready: the hub on {tmp_path / 'hub.sock'} answered hello with error hub_full: no room"
    ]
    assert watched.ready == []


# -- the whole supervisor -----------------------------------------------------------


def test_a_wedged_hub_never_counts_as_ready_and_fails_by_its_start_timeout(
    start_fleet: StartFleet,
) -> None:
    doc = fleet_config(
        ["wedge_chan"],
        hub=True,
        hub_extra=["--wedge"],
        supervisor={"hub": {"start_timeout_sec": 5}, "stop_timeout_sec": 1},
    )
    del doc["supervisor"]["hub"]["ready"]  # the default: protocol
    sup = start_fleet(doc)
    sup.wait_for(r"hub: not ready: the hub accepts connections on .* sent no pong")
    hub = sup.status()["hub"]
    assert hub["state"] == "starting"
    assert "it is not serving bots" in hub["reason"]
    assert sup.bot("wedge_chan")["pid"] is None  # no bot starts towards it
    sup.wait_for(r"hub: not ready within 5(\.0)? s")
    sup.wait_for(r"hub: did not stop within 1(\.0)? s; sending SIGKILL")  # it ignores SIGTERM
    assert not sup.seen(r"hub: ready")
    assert not sup.seen(r"wedge_chan: started")


def test_the_default_readiness_starts_bots_once_the_hub_answers(start_fleet: StartFleet) -> None:
    # The probe must not disturb a working hub: it is ready, and the bots start.
    doc = fleet_config(["served_chan"], hub=True)
    del doc["supervisor"]["hub"]["ready"]  # the default: protocol
    sup = start_fleet(doc)
    sup.wait_for(r"hub: ready")
    sup.wait_for(r"served_chan: ready")
    assert not sup.seen(r"hub: not ready")


def test_db_mode_waits_for_connected(start_fleet: StartFleet, tmp_path: Path) -> None:
    db = KissbotDb.create(tmp_path / "kissbot.db")
    db.add_account(
        "el_serda", "2002", "caster", expires_at=time.time() + 86_400, token_type="broadcaster"
    )
    doc = fleet_config(
        ["db_chan"], hub=True, hub_extra=["--wedge"], supervisor={"hub": {"ready": "db"}}
    )
    sup = start_fleet(doc)
    sup.wait_for(r"hub: not ready: its socket accepts, but hub_state has ws_state 'connecting'")
    assert sup.status()["hub"]["state"] == "starting"
    with db.connect() as conn:  # what the hub writes once Twitch answers
        conn.execute("UPDATE hub_state SET value = 'connected' WHERE key = 'ws_state'")
    sup.wait_for(r"hub: ready")
    sup.wait_for(r"db_chan: started")


def test_a_hub_that_stops_answering_is_killed_by_its_liveness_check(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    # Checked every 3 s, killed after 9 s without a pong. It serves for 12 s first:
    # were the passing checks not counted, it would be killed before it hangs.
    doc = fleet_config(
        ["live_chan"],
        hub=True,
        hub_extra=["--hang-after", "12"],
        supervisor={"hub": {"ready": "protocol", "liveness_sec": 3}, "stop_timeout_sec": 1},
    )
    sup = start_fleet(doc)
    sup.wait_for(r"hub: ready")
    sup.wait_for(r"live_chan: ready")
    sup.wait_for(r"hub: liveness check failed: the hub accepts connections .* sent no pong")
    sup.wait_for(r"hub: watchdog timeout: no pong to hello \+ ping for 9(\.0)? s")
    hub_log = (tmp_path / "logs" / "supervisor" / "hub.log").read_text()
    assert "hanging now (demo --hang-after)" in hub_log  # killed for hanging, not before
    # Restarted, and the bots with it (they never reconnect to a new hub by themselves).
    mark = sup.mark()
    sup.wait_for(r"hub: ready", since=mark)
    sup.wait_for(r"live_chan: restarting to reconnect to the new hub", since=mark)
