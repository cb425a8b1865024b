"""The supervision core, driven through scripted histories with a fake clock.

The clock is a plain float (``Fleet.now``) that only the test moves; pids come
from a counter. Nothing here spawns, kills or sleeps. Each test asserts on the
actions a call to ``Core.handle`` returns and on ``Core.status``.
"""

from __future__ import annotations

import itertools
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kissbot_supervisor.core import (
    HUB,
    Action,
    Core,
    Event,
    Exited,
    Finished,
    Gate,
    Hold,
    Kill,
    MemorySample,
    Note,
    Phase,
    Policy,
    ProcessSpec,
    ProcessStatus,
    Ready,
    Release,
    Reload,
    Restart,
    Shutdown,
    Spawn,
    Spawned,
    SpawnFailed,
    Stalled,
    Start,
    Stop,
    Tick,
    Waiting,
    WatchdogPing,
)
from kissbot_supervisor.core.commands import Before, result, settled
from kissbot_supervisor.core.machine import LOGIN_WINDOW_SEC, MAX_WORDS, TWITCH_LOGIN_WINDOW_SEC

if TYPE_CHECKING:
    from kissbot_supervisor.core import ReadyMode

A, B, C = "alpha_ch", "beta_ch", "gamma_ch"
TERM, KILL = int(signal.SIGTERM), int(signal.SIGKILL)


def spec(
    name: str,
    *,
    ready: ReadyMode = "none",
    watchdog: float = 0.0,
    start_timeout: float = 0.0,
    argv: tuple[str, ...] | None = None,
) -> ProcessSpec:
    return ProcessSpec(
        name=name,
        argv=argv or ("prog", name),
        ready=ready,
        watchdog_sec=watchdog,
        start_timeout_sec=start_timeout,
    )


def hub_spec(ready: ReadyMode = "socket") -> ProcessSpec:
    return spec(HUB, ready=ready)


# --- looking at actions -------------------------------------------------------


def spawns(actions: list[Action]) -> list[str]:
    return [a.spec.name for a in actions if isinstance(a, Spawn)]


def kills(actions: list[Action]) -> list[tuple[str, int, bool]]:
    return [(a.name, int(a.signal), a.group) for a in actions if isinstance(a, Kill)]


def notes(actions: list[Action], kind: str) -> list[Note]:
    return [a for a in actions if isinstance(a, Note) and a.kind == kind]


def named(actions: list[Action]) -> set[str]:
    """Every process name an action is about."""
    out = set()
    for a in actions:
        if isinstance(a, Spawn):
            out.add(a.spec.name)
        elif isinstance(a, Kill | Note | Release):
            out.add(a.name)
    return out


# --- the harness --------------------------------------------------------------


class Fleet:
    """A Core, a fake clock (a float that only goes forward) and a pid counter."""

    def __init__(self, specs: list[ProcessSpec], policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.core = Core(specs, self.policy)
        self.now = 0.0
        self._pids = itertools.count(1000)
        self.pid: dict[str, int] = {}

    def send(self, event: Event, at: float | None = None) -> list[Action]:
        if at is not None:
            assert at >= self.now, "the fake clock only goes forward"
            self.now = at
        return self.core.handle(event, self.now)

    def tick(self, at: float | None = None) -> list[Action]:
        return self.send(Tick(), at)

    def spawned(self, name: str, at: float | None = None) -> list[Action]:
        self.pid[name] = next(self._pids)
        return self.send(Spawned(name, self.pid[name]), at)

    def exited(
        self, name: str, code: int | None = None, sig: int | None = None, at: float | None = None
    ) -> list[Action]:
        return self.send(Exited(name, self.pid[name], code=code, signal=sig), at)

    def status(self, name: str) -> ProcessStatus:
        (st,) = [s for s in self.core.status(self.now) if s.name == name]
        return st

    def boot(self) -> None:
        """Start everything and answer every Spawn with Spawned (and Ready when needed)."""
        pending = spawns(self.tick())
        while pending:
            name = pending.pop(0)
            actions = self.spawned(name)
            if self.status(name).state is not Phase.RUNNING:
                actions += self.send(Ready(name))
            pending += spawns(actions)
        assert all(s.state is Phase.RUNNING for s in self.core.status(self.now))

    def crash_until_parked(self, name: str, code: int | None, sig: int | None) -> list[Action]:
        """Let ``name`` (spawned) exit, wait out each backoff, respawn; the last exit's actions."""
        while True:
            actions = self.exited(name, code=code, sig=sig)
            if notes(actions, "parked"):
                return actions
            assert notes(actions, "backoff"), actions
            deadline = self.core.next_deadline()
            assert deadline is not None
            assert spawns(self.tick(deadline)) == [name]
            self.spawned(name)


# --- start-up -------------------------------------------------------------------


def test_hub_first_then_every_bot_in_one_call() -> None:
    f = Fleet([hub_spec(), spec(A, ready="file"), spec(B, ready="file"), spec(C, ready="file")])

    assert spawns(f.tick(0.0)) == [HUB]
    assert spawns(f.spawned(HUB)) == []
    waiting = f.status(A)
    assert waiting.state is Phase.STARTING
    assert waiting.reason == "waiting for the hub to be ready"
    assert spawns(f.tick(5.0)) == []  # time alone does not release the bots

    assert spawns(f.send(Ready(HUB), at=6.0)) == [A, B, C]
    for name in (A, B, C):
        f.spawned(name)
        assert f.status(name).state is Phase.STARTING  # ready="file": not ready yet
        assert f.status(name).ready is False
    f.send(Ready(B))
    assert f.status(B).state is Phase.RUNNING
    assert f.status(A).state is Phase.STARTING


def test_ready_none_means_ready_once_spawned() -> None:
    f = Fleet([hub_spec(ready="none"), spec(A)])
    f.tick(0.0)
    actions = f.spawned(HUB)
    assert notes(actions, "ready")
    assert spawns(actions) == [A]  # the hub's Spawned released the bots
    f.spawned(A, at=2.0)
    st = f.status(A)
    assert (st.state, st.ready, st.pid) == (Phase.RUNNING, True, f.pid[A])
    assert st.uptime_s == 0.0
    f.tick(12.5)
    assert f.status(A).uptime_s == 10.5


def test_a_backends_waiting_reason_shows_until_ready() -> None:
    f = Fleet([hub_spec()])
    f.tick(0.0)
    assert f.send(Waiting(HUB, "not ready: held by PID 7")) == []  # not spawned: ignored
    assert f.status(HUB).reason is None
    f.spawned(HUB)
    f.send(Waiting(HUB, "not ready: held by PID 7"))
    assert f.status(HUB).reason == "not ready: held by PID 7"
    f.send(Ready(HUB))
    assert f.status(HUB).reason is None
    f.send(Waiting(HUB, "late"))  # running: a late word changes nothing
    assert f.status(HUB).reason is None


def test_ready_before_spawned_or_twice_is_ignored() -> None:
    f = Fleet([spec(A, ready="notify")])
    f.tick(0.0)
    assert f.send(Ready(A)) == []  # no process yet
    f.spawned(A)
    assert notes(f.send(Ready(A)), "ready")
    assert f.send(Ready(A)) == []


# --- crashes and backoff -----------------------------------------------------


@pytest.mark.parametrize(("code", "sig"), [(1, None), (None, KILL)])
def test_crash_backs_off_then_spawns_at_the_deadline(code: int | None, sig: int | None) -> None:
    f = Fleet([spec(A)], Policy(delay_sec=3.0))
    f.boot()

    actions = f.exited(A, code=code, sig=sig, at=100.0)
    assert spawns(actions) == []
    (note,) = notes(actions, "backoff")
    assert "restarting in 3.0 s (failure 1)" in note.message
    st = f.status(A)
    assert (st.state, st.pid, st.want) == (Phase.BACKOFF, None, True)
    assert f.core.next_deadline() == 103.0

    assert spawns(f.tick(102.9)) == []
    assert spawns(f.tick(1003.0)) == [A]
    assert f.status(A).state is Phase.STARTING


def test_backoff_doubles_and_is_capped() -> None:
    f = Fleet(
        [spec(A)], Policy(delay_sec=1.0, max_delay_sec=5.0, reset_after_sec=1e6, give_up_after=0)
    )
    f.tick(0.0)
    f.spawned(A)
    delays = []
    for _ in range(7):
        f.exited(A, code=1)
        deadline = f.core.next_deadline()
        assert deadline is not None
        delays.append(deadline - f.now)
        assert spawns(f.tick(deadline)) == [A]
        f.spawned(A)
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]


def test_spawn_failure_counts_as_a_failure() -> None:
    f = Fleet([spec(A)], Policy(delay_sec=2.0))
    f.tick(0.0)
    actions = f.send(SpawnFailed(A, "No such file or directory"), at=1.0)
    assert notes(actions, "backoff")
    assert f.status(A).last_exit == "could not start: No such file or directory"
    assert f.core.next_deadline() == 3.0
    assert spawns(f.tick(3.0)) == [A]


def test_failures_older_than_reset_after_are_forgotten() -> None:
    # Never ready, so only the window can forget the failures.
    def delay_after_third_failure(at: float) -> float:
        f = Fleet([spec(A, ready="file")], Policy(delay_sec=1.0, reset_after_sec=60.0))
        f.tick(0.0)
        f.spawned(A)
        f.exited(A, code=1, at=0.0)  # failure 1 at 0, delay 1
        f.tick(1.0)
        f.spawned(A)
        f.exited(A, code=1, at=1.0)  # failure 2 at 1, delay 2
        f.tick(3.0)
        f.spawned(A)
        f.exited(A, code=1, at=at)
        deadline = f.core.next_deadline()
        assert deadline is not None
        return deadline - at

    assert delay_after_third_failure(50.0) == 4.0  # all three within 60 s
    assert delay_after_third_failure(70.0) == 1.0  # the first two are forgotten


def test_a_process_that_ran_long_enough_starts_again_from_the_first_delay() -> None:
    f = Fleet([spec(A)], Policy(delay_sec=1.0, reset_after_sec=60.0))
    f.tick(0.0)
    f.spawned(A)
    for _ in range(3):  # failures 1, 2, 3: delays 1, 2, 4
        f.exited(A, code=1)
        deadline = f.core.next_deadline()
        assert deadline is not None
        f.tick(deadline)
        f.spawned(A)
    assert f.now == 7.0
    f.exited(A, code=1, at=67.0)  # up (and ready) for 60 s
    assert f.core.next_deadline() == 68.0
    assert "(failure 1)" in (f.status(A).reason or "")


# --- parking ------------------------------------------------------------------


def test_exit_1_at_start_up_parks_with_the_token_hint() -> None:
    f = Fleet([spec(A, ready="file")])  # default policy: 1, 2, 4, 8, give up after 5
    f.tick(0.0)
    f.spawned(A)
    actions = f.crash_until_parked(A, code=1, sig=None)

    (parked,) = notes(actions, "parked")
    assert parked.message.startswith("exited 1 5 times within 15 s at start-up; token revoked?")
    st = f.status(A)
    assert st.state is Phase.FAILED
    assert st.reason == parked.message
    assert st.want is True
    assert f.core.next_deadline() is None
    assert spawns(f.tick(1e6)) == []
    assert f.status(A).state is Phase.FAILED


def test_a_hub_exiting_1_at_start_up_parks_with_its_own_hint() -> None:
    # The hub exits 1 for more than a token (its socket path taken by a regular file,
    # say): the bots' "token revoked?" would send the operator the wrong way.
    f = Fleet([hub_spec()], Policy(give_up_after=3))
    f.tick(0.0)
    f.spawned(HUB)
    (parked,) = notes(f.crash_until_parked(HUB, code=1, sig=None), "parked")
    assert parked.message.endswith(
        "at start-up; its socket path, DB, config or token? (see its log)"
    )
    assert "token revoked" not in parked.message


def test_spawns_after_a_backoff_carry_the_restart_count() -> None:
    f = Fleet([spec(A, ready="file")])
    assert [a.restarts for a in f.tick(0.0) if isinstance(a, Spawn)] == [0]
    f.spawned(A)
    f.exited(A, code=1, at=1.0)
    deadline = f.core.next_deadline()
    assert deadline is not None
    assert [a.restarts for a in f.tick(deadline) if isinstance(a, Spawn)] == [1]


def test_crashes_after_ready_park_with_a_generic_reason() -> None:
    f = Fleet([spec(A)])  # ready="none": every incarnation was ready
    f.tick(0.0)
    f.spawned(A)
    actions = f.crash_until_parked(A, code=None, sig=KILL)
    (parked,) = notes(actions, "parked")
    assert "token" not in parked.message
    assert parked.message.startswith("failed 5 times within 15 s (last: killed by SIGKILL)")
    assert spawns(f.tick(1e6)) == []


def test_another_exit_code_at_start_up_is_named_without_the_token_hint() -> None:
    f = Fleet([spec(A, ready="file")])
    f.tick(0.0)
    f.spawned(A)
    (parked,) = notes(f.crash_until_parked(A, code=2, sig=None), "parked")
    assert parked.message.startswith("exited 2 5 times within 15 s at start-up")
    assert "token" not in parked.message


def test_give_up_after_zero_never_parks() -> None:
    f = Fleet([spec(A)], Policy(give_up_after=0, reset_after_sec=1e6))
    f.tick(0.0)
    f.spawned(A)
    for _ in range(20):
        assert notes(f.exited(A, code=1), "backoff")
        deadline = f.core.next_deadline()
        assert deadline is not None
        assert spawns(f.tick(deadline)) == [A]
        f.spawned(A)


def test_start_on_a_parked_process_spawns_it_with_failures_forgotten() -> None:
    f = Fleet([spec(A, ready="file")])
    f.tick(0.0)
    f.spawned(A)
    f.crash_until_parked(A, code=1, sig=None)

    assert f.now == 15.0  # parked at once: the five failures are still in the window
    assert spawns(f.send(Start((A,)), at=16.0)) == [A]
    assert f.status(A).reason is None
    f.spawned(A)
    actions = f.exited(A, code=1, at=17.0)
    assert not notes(actions, "parked")
    assert f.core.next_deadline() == 18.0  # the first delay again
    assert "(failure 1)" in (f.status(A).reason or "")


def test_a_park_holds_the_process_as_parked_and_a_stop_clears_it() -> None:
    # Under systemd a parked unit stays failed, for systemctl --failed to list;
    # an operator's stop is no failure, and clears it.
    f = Fleet([spec(A, ready="file")])
    f.tick(0.0)
    f.spawned(A)
    actions = f.crash_until_parked(A, code=1, sig=None)
    assert [a for a in actions if isinstance(a, Hold)] == [Hold(A, parked=True)]
    actions = f.send(Stop((A,)), at=f.now + 1)
    assert [a for a in actions if isinstance(a, Hold)] == [Hold(A, parked=False)]


def test_a_shutdown_clears_a_parked_process() -> None:
    f = Fleet([spec(A, ready="file"), spec(B, ready="file")])
    f.tick(0.0)
    f.spawned(A)
    f.crash_until_parked(A, code=1, sig=None)
    actions = f.send(Shutdown(), at=f.now + 1)
    assert [a for a in actions if isinstance(a, Hold)] == [Hold(A, parked=False)]
    # Once: the shutdown goes on with other events (B's stop), and says it no more.
    actions = f.tick(f.now + 1)
    assert not [a for a in actions if isinstance(a, Hold)]


# --- stop, start, restart -----------------------------------------------------


def test_stop_is_sticky() -> None:
    f = Fleet([spec(A), spec(B)], Policy(stop_timeout_sec=10.0))
    f.boot()
    pid = f.pid[A]

    actions = f.send(Stop((A,)), at=5.0)
    assert kills(actions) == [(A, TERM, False)]
    assert f.status(A).want is False
    assert f.status(A).state is Phase.STOPPING
    assert f.core.next_deadline() == 15.0

    actions = f.exited(A, sig=TERM, at=6.0)
    assert notes(actions, "stopped")
    assert spawns(actions) == []
    st = f.status(A)
    assert (st.state, st.pid, st.want) == (Phase.STOPPED, None, False)
    assert st.reason == "stopped by an operator"
    assert f.core.next_deadline() is None

    assert f.tick(1000.0) == []
    reload = f.send(Reload((spec(A), spec(B)), f.policy), at=1001.0)
    assert reload == []
    assert f.status(A).state is Phase.STOPPED
    assert f.status(B).state is Phase.RUNNING
    assert pid not in (s.pid for s in f.core.status(f.now))


def test_start_after_stop_spawns_again() -> None:
    f = Fleet([spec(A)])
    f.boot()
    f.send(Stop((A,)))
    f.exited(A, sig=TERM)
    assert spawns(f.send(Start((A,)))) == [A]
    assert f.status(A).want is True


def test_stop_during_backoff_cancels_the_restart() -> None:
    f = Fleet([spec(A)])
    f.boot()
    f.exited(A, code=1, at=10.0)
    assert f.core.next_deadline() == 11.0
    f.send(Stop((A,)), at=10.5)
    assert f.status(A).state is Phase.STOPPED
    assert f.core.next_deadline() is None
    assert spawns(f.tick(11.0)) == []


def test_stop_timeout_sends_sigkill_to_the_group() -> None:
    f = Fleet([spec(A)], Policy(stop_timeout_sec=10.0))
    f.boot()
    pid = f.pid[A]
    f.send(Stop((A,)), at=5.0)

    assert kills(f.tick(14.9)) == []
    actions = f.tick(15.0)
    assert actions.count(Kill(A, pid, signal.SIGKILL, group=True)) == 1
    assert notes(actions, "kill")
    assert f.core.next_deadline() is None  # no second SIGKILL
    assert kills(f.tick(100.0)) == []

    actions = f.exited(A, sig=KILL)
    assert notes(actions, "stopped")
    assert spawns(actions) == []
    assert f.status(A).state is Phase.STOPPED


@pytest.mark.parametrize(("code", "sig"), [(0, None), (None, TERM)])
def test_clean_exit_is_not_restarted_on_failure(code: int | None, sig: int | None) -> None:
    f = Fleet([spec(A)])
    f.boot()
    actions = f.exited(A, code=code, sig=sig, at=3.0)
    assert spawns(actions) == []
    assert not notes(actions, "backoff")
    st = f.status(A)
    assert (st.state, st.want) == (Phase.STOPPED, False)
    assert "not restarted" in (st.reason or "")
    assert f.core.next_deadline() is None
    assert spawns(f.tick(100.0)) == []


@pytest.mark.parametrize(("code", "sig"), [(0, None), (None, TERM)])
def test_clean_exit_is_restarted_with_restart_always(code: int | None, sig: int | None) -> None:
    f = Fleet([spec(A)], Policy(restart_always=True, delay_sec=2.0))
    f.boot()
    f.exited(A, code=code, sig=sig, at=3.0)
    assert f.status(A).want is True
    assert f.core.next_deadline() == 5.0
    assert spawns(f.tick(5.0)) == [A]


def test_restart_command_terms_then_spawns_at_once() -> None:
    f = Fleet([spec(A), spec(B)])
    f.boot()
    old = f.pid[A]
    actions = f.send(Restart((A,)), at=10.0)
    assert kills(actions) == [(A, TERM, False)]
    assert spawns(actions) == []

    actions = f.exited(A, sig=TERM, at=11.0)
    assert spawns(actions) == [A]  # no backoff
    assert not notes(actions, "backoff")
    # The Spawn carries the count, for a backend that must keep it across our restart.
    assert [a.restarts for a in actions if isinstance(a, Spawn)] == [1]
    assert f.status(A).restarts == 0  # counted once it runs
    f.spawned(A)
    assert f.status(A).restarts == 1
    assert f.status(B).restarts == 0
    f.spawned(A)
    assert f.pid[A] != old
    assert f.status(A).state is Phase.RUNNING


def test_restart_of_a_backing_off_process_spawns_it_now() -> None:
    f = Fleet([spec(A)], Policy(delay_sec=30.0))
    f.boot()
    f.exited(A, code=1, at=1.0)
    assert spawns(f.send(Restart((A,)), at=2.0)) == [A]


# --- timeouts ---------------------------------------------------------------------


def test_start_timeout_stops_the_process_and_counts_a_failure() -> None:
    f = Fleet([spec(A, ready="file", start_timeout=30.0)], Policy(delay_sec=1.0))
    f.tick(0.0)
    f.spawned(A)
    assert f.core.next_deadline() == 30.0

    assert kills(f.tick(29.0)) == []
    actions = f.tick(30.0)
    assert kills(actions) == [(A, TERM, False)]
    assert notes(actions, "start-timeout")

    # Its SIGTERM death is a failure, not a clean exit.
    actions = f.exited(A, sig=TERM, at=31.0)
    assert notes(actions, "backoff")
    st = f.status(A)
    assert st.state is Phase.BACKOFF
    assert st.want is True
    assert "not ready within 30 s" in (st.last_exit or "")
    assert f.core.next_deadline() == 32.0


def test_ready_in_time_cancels_the_start_timeout() -> None:
    f = Fleet([spec(A, ready="file", start_timeout=30.0)])
    f.tick(0.0)
    f.spawned(A)
    f.send(Ready(A), at=5.0)
    assert f.core.next_deadline() is None
    assert kills(f.tick(30.0)) == []


def test_watchdog_ping_pushes_the_deadline_and_a_miss_kills_the_group() -> None:
    f = Fleet([spec(A, watchdog=10.0)])
    f.tick(0.0)
    f.spawned(A)
    pid = f.pid[A]
    assert f.core.next_deadline() == 10.0
    f.send(WatchdogPing(A), at=8.0)
    assert f.core.next_deadline() == 18.0
    assert kills(f.tick(10.0)) == []

    actions = f.tick(18.0)
    assert Kill(A, pid, signal.SIGKILL, group=True) in actions
    assert kills(actions) == [(A, KILL, True)]
    assert notes(actions, "watchdog")

    actions = f.exited(A, sig=KILL, at=18.5)
    assert notes(actions, "backoff")
    assert "watchdog timeout" in (f.status(A).last_exit or "")
    assert f.status(A).state is Phase.BACKOFF
    # Counted for metrics; the PID that died stays known (the on_failure hook gets it).
    assert f.core.procs[A].watchdog_timeouts == 1
    assert f.core.procs[A].last_pid == pid
    assert f.core.procs[A].pid is None


def test_a_stall_of_the_supervisor_restarts_the_watch_instead_of_killing() -> None:
    # The supervisor was paused from 5 to 30: the bots' silence then is no evidence.
    f = Fleet([spec(A, watchdog=10.0), spec(B, ready="notify", start_timeout=20.0)])
    f.tick(0.0)
    f.spawned(A)
    f.spawned(B)
    actions = f.send(Stalled(20.0), at=30.0)
    assert notes(actions, "stalled")
    assert kills(actions + f.tick(30.0)) == []
    assert f.core.procs[A].watchdog_deadline == 40.0  # a full period, from now
    assert f.core.procs[B].start_deadline == 50.0  # the 20 s it was denied
    # Then the watch is as strict as ever: a hung bot is still killed.
    assert kills(f.tick(40.0)) == [(A, KILL, True)]
    f.send(Ready(B), at=41.0)
    assert f.core.procs[B].start_deadline is None


def test_a_stall_with_nothing_watched_says_nothing() -> None:
    f = Fleet([spec(A)])
    f.tick(0.0)
    f.spawned(A)
    assert f.send(Stalled(20.0), at=30.0) == []


def test_starts_that_never_ran_are_failures_not_restarts() -> None:
    # A fork refused, a lock held by a copy started elsewhere: nothing ran, so
    # nothing restarted; each is a failure with its own reason, and backs off.
    f = Fleet([spec(A)])
    f.tick(0.0)
    f.send(SpawnFailed(A, "fork failed: Resource temporarily unavailable"))
    assert f.status(A).restarts == 0
    assert f.status(A).last_exit == "could not start: fork failed: Resource temporarily unavailable"
    assert spawns(f.tick(5.0)) == [A]
    f.send(SpawnFailed(A, "another copy is already running (PID 4242)"))
    assert spawns(f.tick(10.0)) == [A]
    assert f.status(A).restarts == 0
    f.spawned(A)
    assert f.status(A).restarts == 1  # the one start that ran after the first try
    assert f.status(A).state is Phase.RUNNING  # ready: none


def test_an_administrators_restart_is_respected_and_counted() -> None:
    # systemctl restart: the manager stops the unit (a job the core did not ask
    # for), then starts it by itself. Neither a failure nor an exit by itself.
    f = Fleet([spec(A)])
    f.boot()
    old = f.pid[A]
    actions = f.send(Exited(A, old, signal=TERM, external=True), at=10.0)
    assert spawns(actions) == []
    assert kills(actions) == []
    assert notes(actions, "stopped")
    status = f.status(A)
    assert (status.state, status.want) == (Phase.STOPPED, False)
    assert "service manager" in (status.reason or "")
    actions = f.send(Spawned(A, 4242, outside=True), at=10.5)
    assert kills(actions) == []  # not stopped again: the administrator wants it
    status = f.status(A)
    assert (status.want, status.pid, status.restarts) == (True, 4242, 1)
    assert status.reason is None


def test_an_administrators_stop_is_sticky_and_a_stop_of_ours_is_ours() -> None:
    f = Fleet([spec(A), spec(B)])
    f.boot()
    f.send(Exited(A, f.pid[A], signal=TERM, external=True), at=10.0)
    assert spawns(f.tick(100.0)) == []  # stays stopped, no backoff, no retry
    assert f.status(A).want is False
    # The core's own stop, with the manager's job under way too: still the core's.
    f.send(Stop((B,)), at=101.0)
    actions = f.send(Exited(B, f.pid[B], signal=TERM, external=True), at=101.5)
    assert [n.message for n in notes(actions, "stopped")] == ["stopped (killed by SIGTERM)"]


def test_a_bot_over_its_memory_cap_is_killed_and_restarted_with_the_reason() -> None:
    capped = ProcessSpec(name=A, argv=("prog", A), ready="none", memory_max=64 * 2**20)
    f = Fleet([capped, spec(B)])
    f.boot()
    pid = f.pid[A]
    assert f.send(MemorySample(A, pid, 60 * 2**20), at=5.0) == []  # under: nothing
    assert f.send(MemorySample(A, pid + 1, 90 * 2**20), at=6.0) == []  # another PID's
    actions = f.send(MemorySample(A, pid, 90 * 2**20), at=10.0)
    assert kills(actions) == [(A, KILL, True)]
    (note,) = notes(actions, "memory")
    assert note.message == "memory limit: 90 MiB resident, over bot.memory_max (64 MiB)"
    assert f.send(MemorySample(A, pid, 95 * 2**20), at=11.0) == []  # killed already
    actions = f.exited(A, sig=KILL, at=11.5)
    assert notes(actions, "backoff")
    assert f.status(A).last_exit == (
        "killed by SIGKILL (memory limit: 90 MiB resident, over bot.memory_max (64 MiB))"
    )
    # A bot without a cap is never sampled into a kill.
    assert f.send(MemorySample(B, f.pid[B], 2**40), at=12.0) == []


def test_a_backend_watchdog_exit_is_counted_and_other_exits_are_not() -> None:
    f = Fleet([spec(A, watchdog=10.0)], Policy(backend_watchdog=True))
    f.boot()
    f.send(Exited(A, f.pid[A], signal=int(signal.SIGABRT), reason="watchdog timeout"), at=20.0)
    assert f.core.procs[A].watchdog_timeouts == 1
    deadline = f.core.next_deadline()
    assert deadline is not None
    f.tick(deadline)
    f.spawned(A)
    f.exited(A, sig=KILL)
    assert f.core.procs[A].watchdog_timeouts == 1


def test_a_liveness_check_of_the_supervisor_is_kept_by_the_core_under_either_backend() -> None:
    # hub.liveness_sec: the pings come from the supervisor's own check, which systemd
    # cannot see, so the core keeps the deadline even when the backend has a watchdog.
    checked = ProcessSpec(
        name=HUB, argv=("hub",), ready="protocol", watchdog_sec=9.0, liveness="pong to x"
    )
    assert checked.liveness_every == 3.0
    assert spec(A, watchdog=9.0).liveness_every == 0.0
    for backend_watchdog in (False, True):
        f = Fleet([checked, spec(A, watchdog=9.0)], Policy(backend_watchdog=backend_watchdog))
        f.tick(0.0)
        f.spawned(HUB)
        f.spawned(A)
        assert f.core.procs[HUB].watchdog_deadline == 9.0
        assert f.core.procs[A].watchdog_deadline == (None if backend_watchdog else 9.0)
        f.send(WatchdogPing(HUB), at=3.0)
        assert kills(f.tick(9.0)) == ([] if backend_watchdog else [(A, KILL, True)])
        actions = f.tick(12.0)
        assert (HUB, KILL, True) in kills(actions)
        assert [n.message for n in notes(actions, "watchdog")] == [
            "watchdog timeout: no pong to x for 9.0 s"
        ]


def system_log_spec(name: str, silence: float = 300.0) -> ProcessSpec:
    """bot.liveness: system-log, as config/specs.py builds it."""
    path = f"logs/broadcast/{name}/system.log"
    return ProcessSpec(
        name=name,
        argv=("prog", name),
        ready="file",
        watchdog_sec=silence,
        start_timeout_sec=120.0,
        liveness=f"write to {path}",
        liveness_file=path,
    )


@pytest.mark.parametrize("backend_watchdog", [False, True])
def test_a_silent_system_log_is_a_hang_killed_and_restarted_as_a_watchdog_timeout(
    backend_watchdog: bool,
) -> None:
    # The supervisor's inotify watch sends a WatchdogPing for each write: a write is a
    # ping; silence past the limit kills the group, under either backend (systemd has
    # no WatchdogSec for it: the core keeps the deadline and the backend kills).
    watched = system_log_spec(A)
    assert watched.liveness_every == 0.0  # watched for writes: no periodic check
    f = Fleet([watched, spec(B)], Policy(backend_watchdog=backend_watchdog))
    f.tick(0.0)
    f.spawned(A)
    f.spawned(B)
    pid = f.pid[A]
    assert f.core.procs[A].watchdog_deadline == 300.0  # counted from its start
    f.send(Ready(A), at=20.0)
    for t in (60.0, 120.0, 180.0, 240.0, 300.0):  # the real bot's minutely line
        f.send(WatchdogPing(A), at=t)
        assert kills(f.tick()) == []
    assert f.core.next_deadline() == 600.0
    assert kills(f.tick(599.0)) == []
    actions = f.tick(600.0)
    assert kills(actions) == [(A, KILL, True)]
    (note,) = notes(actions, "watchdog")
    assert note.message == f"hung: logs/broadcast/{A}/system.log silent for 5 min"
    assert f.send(WatchdogPing(A), at=600.5) == []  # too late: on its way out
    assert f.core.procs[A].watchdog_deadline is None
    actions = f.exited(A, sig=KILL, at=601.0)
    assert notes(actions, "backoff")
    status = f.status(A)
    assert status.state is Phase.BACKOFF
    assert status.last_exit == (
        f"killed by SIGKILL (hung: logs/broadcast/{A}/system.log silent for 5 min)"
    )
    assert (status.reason or "").startswith(status.last_exit or "")
    assert f.core.procs[A].watchdog_timeouts == 1
    # Restarted after the backoff, with a fresh silence allowance.
    deadline = f.core.next_deadline()
    assert deadline is not None
    assert spawns(f.tick(deadline)) == [A]
    f.spawned(A)
    assert f.core.procs[A].watchdog_deadline == f.now + 300.0
    assert f.core.procs[A].pid != pid


def test_a_system_log_silence_that_is_not_whole_minutes_is_said_in_seconds() -> None:
    f = Fleet([system_log_spec(A, silence=4.5)])
    f.tick(0.0)
    f.spawned(A)
    (note,) = notes(f.tick(4.5), "watchdog")
    assert note.message == f"hung: logs/broadcast/{A}/system.log silent for 4.5 s"


def test_a_stalled_supervisor_is_no_silence_of_the_system_log() -> None:
    # The supervisor did not run from 100 to 500: the writes in that time were not
    # seen (or came all at once); the bot's silence counts again from now.
    f = Fleet([system_log_spec(A)])
    f.tick(0.0)
    f.spawned(A)
    f.send(WatchdogPing(A), at=100.0)
    actions = f.send(Stalled(400.0), at=500.0)
    assert notes(actions, "stalled")
    assert kills(actions + f.tick(500.0)) == []
    assert f.core.procs[A].watchdog_deadline == 800.0
    assert kills(f.tick(799.0)) == []
    assert kills(f.tick(800.0)) == [(A, KILL, True)]


def test_writes_to_the_system_log_of_a_stopped_bot_are_no_sign_of_life() -> None:
    # The watch is on the file, not on the process: a write by nobody the core runs
    # (an earlier incarnation's last line, a stopped bot's directory) starts nothing.
    f = Fleet([system_log_spec(A)])
    f.tick(0.0)
    f.spawned(A)
    f.send(Stop((A,)), at=1.0)
    f.exited(A, sig=TERM, at=2.0)
    assert f.send(WatchdogPing(A), at=3.0) == []
    assert f.core.procs[A].watchdog_deadline is None
    assert f.core.next_deadline() is None


def test_late_exit_of_an_earlier_pid_is_ignored() -> None:
    f = Fleet([spec(A)])
    f.boot()
    old = f.pid[A]
    f.send(Restart((A,)))
    f.exited(A, sig=TERM)
    f.spawned(A)
    assert f.send(Exited(A, old, code=1)) == []
    st = f.status(A)
    assert (st.state, st.pid) == (Phase.RUNNING, f.pid[A])


# --- shutdown ------------------------------------------------------------------


def test_shutdown_stops_bots_then_the_hub_then_finishes() -> None:
    f = Fleet([hub_spec(), spec(A), spec(B), spec(C)], Policy(delay_sec=5.0))
    f.boot()
    hub_pid = f.pid[HUB]
    f.exited(C, code=1, at=10.0)  # backing off until 15
    assert f.core.next_deadline() == 15.0

    actions = f.send(Shutdown(), at=11.0)
    assert sorted(kills(actions)) == [(A, TERM, False), (B, TERM, False)]
    assert Finished() not in actions
    assert f.status(C).state is Phase.STOPPED
    assert f.core.next_deadline() == 21.0  # the stop timeout; C's backoff is cancelled

    assert spawns(f.tick(15.0)) == []  # the old backoff deadline: no spawn
    actions = f.exited(A, sig=TERM, at=16.0)
    assert kills(actions) == []
    assert Finished() not in actions
    assert f.send(Start((A,))) == []  # nothing starts during shutdown

    actions = f.exited(B, sig=TERM, at=17.0)
    assert kills(actions) == [(HUB, TERM, False)]
    assert Finished() not in actions
    assert spawns(actions) == []

    actions = f.send(Exited(HUB, hub_pid, signal=TERM), at=18.0)
    assert actions[-1] == Finished()
    assert actions.count(Finished()) == 1
    assert f.tick(100.0) == []
    assert f.send(Shutdown()) == []


def test_shutdown_sigkills_a_bot_that_does_not_stop() -> None:
    f = Fleet([spec(A)], Policy(stop_timeout_sec=10.0))
    f.boot()
    f.send(Shutdown(), at=1.0)
    assert kills(f.tick(11.0)) == [(A, KILL, True)]
    assert f.exited(A, sig=KILL)[-1] == Finished()


def test_shutdown_with_nothing_running_finishes_at_once() -> None:
    f = Fleet([spec(A, ready="file")])
    f.tick(0.0)
    f.spawned(A)
    f.crash_until_parked(A, code=1, sig=None)
    assert f.send(Shutdown())[-1] == Finished()


def test_shutdown_waits_for_a_spawn_in_flight() -> None:
    f = Fleet([spec(A)])
    assert spawns(f.tick(0.0)) == [A]
    actions = f.send(Shutdown())  # the backend has not answered the Spawn yet
    assert Finished() not in actions

    actions = f.spawned(A)
    assert kills(actions) == [(A, TERM, False)]
    assert Finished() not in actions
    assert f.exited(A, sig=TERM)[-1] == Finished()


def test_shutdown_with_a_spawn_in_flight_that_fails_finishes() -> None:
    f = Fleet([spec(A)])
    f.tick(0.0)
    assert Finished() not in f.send(Shutdown())
    actions = f.send(SpawnFailed(A, "boom"))
    assert actions[-1] == Finished()
    assert spawns(actions) == []


# --- the hub -------------------------------------------------------------------


def test_bots_reconnect_after_the_hub_restarts() -> None:
    f = Fleet([hub_spec(), spec(A), spec(B)])
    f.boot()

    actions = f.exited(HUB, code=1, at=50.0)
    assert kills(actions) == []  # the bots keep running while the hub is down
    assert f.status(A).state is Phase.RUNNING
    assert spawns(f.tick(51.0)) == [HUB]
    assert kills(f.spawned(HUB)) == []  # spawned is not ready

    actions = f.send(Ready(HUB), at=52.0)
    assert sorted(kills(actions)) == [(A, TERM, False), (B, TERM, False)]
    actions = f.exited(A, sig=TERM, at=53.0)
    assert spawns(actions) == [A]  # at once: the hub is ready
    assert not notes(actions, "backoff")
    f.spawned(A)
    assert f.status(A).restarts == 1


def test_hub_restart_leaves_bots_alone_when_told_to() -> None:
    f = Fleet([hub_spec(), spec(A)], Policy(hub_restart_bots=False))
    f.boot()
    f.exited(HUB, code=1, at=50.0)
    f.tick(51.0)
    f.spawned(HUB)
    assert kills(f.send(Ready(HUB))) == []
    assert f.status(A).restarts == 0


def test_bots_wait_for_a_hub_in_backoff() -> None:
    f = Fleet([hub_spec(), spec(A)])
    f.tick(0.0)
    f.spawned(HUB)
    assert spawns(f.exited(HUB, code=1)) == []
    assert f.status(A).reason == "waiting for the hub to be ready"


def test_bots_do_not_wait_for_a_parked_hub() -> None:
    f = Fleet([hub_spec(), spec(A), spec(B)], Policy(give_up_after=1))
    f.tick(0.0)
    f.spawned(HUB)
    actions = f.exited(HUB, code=1)
    assert notes(actions, "parked")
    assert spawns(actions) == [A, B]


def test_bots_do_not_wait_for_a_stopped_hub() -> None:
    f = Fleet([hub_spec(), spec(A), spec(B)])
    actions = f.send(Stop((HUB,)), at=0.0)
    assert spawns(actions) == [A, B]


def test_bots_started_without_a_hub_reconnect_once_it_is_ready() -> None:
    # The hub is parked at start-up, so the bots start without it; an operator
    # fixes and starts the hub: the bots' hub client never connected, they
    # must be restarted to use it.
    f = Fleet([hub_spec(), spec(A)], Policy(give_up_after=1))
    f.tick(0.0)
    f.spawned(HUB)
    f.exited(HUB, code=1)
    f.spawned(A)
    assert spawns(f.send(Start((HUB,)), at=10.0)) == [HUB]
    f.spawned(HUB)
    actions = f.send(Ready(HUB), at=11.0)
    assert kills(actions) == [(A, TERM, False)]


def test_bots_do_not_wait_for_a_blocked_hub() -> None:
    f = Fleet([hub_spec(), spec(A)])
    actions = f.send(Gate(HUB, "revoked", "broadcaster token revoked"), at=0.0)
    assert spawns(actions) == [A]


# --- token gate -----------------------------------------------------------------


def test_gate_keeps_a_process_from_spawning_until_lifted() -> None:
    f = Fleet([spec(A), spec(B)])
    actions = f.send(Gate(A, "revoked", "bot token revoked"), at=0.0)
    assert spawns(actions) == [B]
    assert notes(actions, "blocked")
    st = f.status(A)
    assert st.state is Phase.STOPPED
    assert st.token_state == "revoked"
    assert "bot token revoked" in (st.reason or "")
    assert spawns(f.tick(100.0)) == []

    actions = f.send(Gate(A, "valid", None), at=101.0)
    assert spawns(actions) == [A]
    assert f.status(A).token_state == "valid"


def test_gate_holds_back_a_restart_after_a_crash() -> None:
    f = Fleet([spec(A)])
    f.boot()
    f.exited(A, code=1, at=1.0)
    f.send(Gate(A, "revoked", "bot token revoked"))
    assert spawns(f.tick(2.0)) == []
    assert spawns(f.send(Gate(A, "valid", None))) == [A]


# --- reload -----------------------------------------------------------------------


def test_reload_adds_removes_and_restarts_only_what_changed() -> None:
    x = "xray_ch"
    f = Fleet([spec(A), spec(B), spec(C), spec(x)])
    f.boot()
    f.send(Stop((C,)))
    f.exited(C, sig=TERM)
    pid_a = f.pid[A]

    new_b = spec(B, argv=("prog", B, "--verbose"))
    new = (spec(A), new_b, spec(C), spec("delta_ch"))
    actions = f.send(Reload(new, f.policy), at=10.0)
    assert spawns(actions) == ["delta_ch"]
    assert sorted(kills(actions)) == [(B, TERM, False), (x, TERM, False)]
    assert A not in named(actions)
    assert C not in named(actions)

    actions = f.exited(x, sig=TERM, at=11.0)
    assert actions[-1] == Release(x)
    assert spawns(actions) == []
    assert x not in f.core.names()

    actions = f.exited(B, sig=TERM, at=12.0)
    assert [a.spec for a in actions if isinstance(a, Spawn)] == [new_b]
    assert f.status(A).pid == pid_a
    assert f.status(C).state is Phase.STOPPED  # still stopped by the operator
    assert f.status(C).want is False


def test_reload_with_a_new_policy_changes_the_next_delay() -> None:
    f = Fleet([spec(A)])
    f.boot()
    assert f.send(Reload((spec(A),), Policy(delay_sec=7.0))) == []
    f.exited(A, code=1, at=1.0)
    assert f.core.next_deadline() == 8.0


def test_reload_removing_a_process_whose_spawn_is_in_flight() -> None:
    f = Fleet([spec(A), spec(B)])
    assert spawns(f.tick(0.0)) == [A, B]
    f.spawned(B)
    actions = f.send(Reload((spec(B),), f.policy))
    assert Release(A) not in actions  # its Spawned is still to come

    actions = f.spawned(A)
    assert kills(actions) == [(A, TERM, False)]
    assert f.exited(A, sig=TERM)[-1] == Release(A)
    assert f.core.names() == [B]


# --- spawns in flight, deadlines -------------------------------------------------


def test_stop_before_spawned_kills_right_after_spawned() -> None:
    f = Fleet([spec(A)])
    assert spawns(f.tick(0.0)) == [A]
    assert kills(f.send(Stop((A,)))) == []  # nothing to signal yet
    actions = f.spawned(A)
    assert kills(actions) == [(A, TERM, False)]
    actions = f.exited(A, sig=TERM)
    assert spawns(actions) == []
    assert f.status(A).state is Phase.STOPPED


def test_next_deadline_is_none_when_nothing_is_pending() -> None:
    f = Fleet([hub_spec(), spec(A), spec(B)])
    assert f.core.next_deadline() is None
    f.boot()
    assert f.core.next_deadline() is None


def test_next_deadline_is_the_earliest_pending_one() -> None:
    f = Fleet([spec(A, ready="file", start_timeout=30.0), spec(B, watchdog=20.0)])
    f.tick(0.0)
    f.spawned(A, at=1.0)
    f.spawned(B, at=2.0)
    assert f.core.next_deadline() == 22.0
    f.send(WatchdogPing(B), at=15.0)
    assert f.core.next_deadline() == 31.0


def test_reload_re_adding_a_process_whose_spawn_is_in_flight_keeps_it() -> None:
    f = Fleet([spec(A)])
    f.tick(0.0)
    f.send(Reload((), f.policy))
    actions = f.send(Reload((spec(A),), f.policy))
    assert spawns(actions) == []  # no second copy: the first Spawn is still in flight
    assert kills(f.spawned(A)) == []
    assert f.status(A).state is Phase.RUNNING
    actions = f.exited(A, code=1)
    assert notes(actions, "backoff")  # a crash, not taken for a requested restart
    assert f.status(A).restarts == 0


def test_exit_codes_outside_the_window_do_not_spoil_the_park_reason() -> None:
    f = Fleet([spec(A, ready="file")], Policy(give_up_after=3, reset_after_sec=60.0))
    f.tick(0.0)
    f.spawned(A)
    f.exited(A, code=2, at=0.0)  # long forgotten by the time it parks
    f.tick(1.0)
    f.spawned(A)
    f.exited(A, code=1, at=100.0)
    f.tick(101.0)
    f.spawned(A)
    f.exited(A, code=1)
    f.tick(103.0)
    f.spawned(A)
    (parked,) = notes(f.exited(A, code=1), "parked")
    assert parked.message.startswith("exited 1 3 times within 3.0 s at start-up; token revoked?")


# --- login pacing (Twitch's limit) -------------------------------------------


def _paced(names: list[str], limit: int = 3) -> Fleet:
    return Fleet([spec(n) for n in names], Policy(logins_per_window=limit))


def test_a_fleet_start_is_paced_by_the_login_window() -> None:
    names = [f"paced_{i:02}" for i in range(7)]
    f = _paced(names)
    first = spawns(f.tick(0.0))
    assert first == names[:3]
    waiting = f.status(names[3])
    assert waiting.state is Phase.STARTING
    assert (
        waiting.reason
        == "waiting for a login slot (Twitch allows the bot account 3 logins per 10 s)"
    )
    for name in first:
        f.spawned(name)
    assert f.core.next_deadline() == LOGIN_WINDOW_SEC
    assert spawns(f.tick(LOGIN_WINDOW_SEC - 0.01)) == []
    assert spawns(f.tick(LOGIN_WINDOW_SEC)) == names[3:6]
    for name in names[3:6]:
        f.spawned(name)
    assert spawns(f.tick(2 * LOGIN_WINDOW_SEC)) == names[6:]


def test_pacing_off_starts_everything_at_once() -> None:
    names = [f"unpaced_{i:02}" for i in range(30)]
    assert spawns(_paced(names, limit=0).tick(0.0)) == names


def test_the_hub_takes_no_login_slot() -> None:
    f = Fleet([hub_spec(ready="none"), spec(A), spec(B)], Policy(logins_per_window=2))
    f.tick(0.0)
    assert spawns(f.spawned(HUB)) == [A, B]


@dataclass
class _Rolling:
    """A rolling restart asked for in the property test below."""

    n: int
    before: dict[str, Before]  # the bots it names, as they were
    excused: set[str]  # down by no doing of its own: down when asked, crashed, started


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=5),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=4.0),
            st.sampled_from(
                ["crash", "restart", "stop", "start", "hub", "tick", "rolling", "reload"]
            ),
            st.integers(min_value=0, max_value=5),
        ),
        max_size=60,
    ),
)
def test_no_sliding_window_ever_holds_more_bot_starts_than_the_limit(
    limit: int, steps: list[tuple[float, str, int]]
) -> None:
    bots = [f"window_{i}" for i in range(6)]
    policy = Policy(logins_per_window=limit, delay_sec=0.5, max_delay_sec=2.0, give_up_after=0)
    f = Fleet([hub_spec(ready="none"), *(spec(n) for n in bots)], policy)
    starts: list[float] = []
    rolling: list[_Rolling] = []  # rolling restarts under way

    def check() -> None:
        # At most N of the bots a rolling restart names are down at any time, not
        # counting those it did not take down (which it counts against N all the same).
        for r in list(rolling):
            if all(settled("restart", f.core.procs.get(b), r.before[b]) for b in r.before):
                rolling.remove(r)  # answered: every bot restarted (or failed, or gone)
                continue
            for s in f.core.status(f.now):
                if s.state is Phase.RUNNING:
                    r.excused.discard(s.name)
            down = [b for b in _down(f, list(r.before)) if b not in r.excused]
            assert len(down) <= r.n, (r, down, f.now)

    def excuse(name: str, was_running: bool = False) -> None:
        """``name`` went down, or stayed down, by the test's doing (not a rolling stop)."""
        for r in rolling:
            if name in r.before and not was_running and f.status(name).state is not Phase.RUNNING:
                r.excused.add(name)

    def run(actions: list[Action]) -> None:
        pending = list(actions)
        handled = 0
        check()
        while pending:
            handled += 1
            assert handled < 1000, f"the core keeps acting at {f.now} (a livelock): {pending}"
            action = pending.pop(0)
            if isinstance(action, Spawn):
                if not action.spec.is_hub:
                    starts.append(f.now)
                pending += f.spawned(action.spec.name)
            elif isinstance(action, Kill):
                pending += f.exited(action.name, sig=int(action.signal))
            check()

    run(f.tick(0.0))
    for gap, what, which in steps:
        at = f.now + gap
        # Time passes: every deadline on the way is met first.
        for _ in range(1000):
            deadline = f.core.next_deadline()
            if deadline is None or deadline > at:
                break
            run(f.tick(max(deadline, f.now)))
        else:
            stuck = {
                n: (q.phase, q.backoff_until, q.retry_at, q.stop_deadline, q.start_deadline,
                    q.watchdog_deadline, q.alive)
                for n, q in f.core.procs.items()
            }  # fmt: skip
            raise AssertionError(
                f"a deadline that time does not clear, at {f.now}: "
                f"{f.core.next_deadline()} {f.core.login_free_at} {stuck}"
            )
        name = bots[which]
        p = f.core.procs.get(name)
        if p is None:  # removed by a reload: back with the next one
            if what == "reload":
                f.now = at
                actions = f.send(Reload((*(q.spec for q in f.core.procs.values()), spec(name)),
                                        policy), at)  # fmt: skip
                excuse(name)
                run(actions)
            else:
                run(f.tick(at))
            continue
        was_running = p.phase is Phase.RUNNING
        if what == "crash" and p.alive:
            actions = f.exited(name, code=1, at=at)
            excuse(name)
            run(actions)
        elif what == "restart":
            actions = f.send(Restart((name,)), at)
            excuse(name, was_running)
            run(actions)
        elif what == "rolling":
            f.now = at
            names = [b for b in bots if b in f.core.procs and not f.core.procs[b].removed]
            r = _Rolling(
                n=which % 3 + 1,
                before={b: Before(f.core.procs[b].phase, f.core.procs[b].pid) for b in names},
                excused={b for b in names if f.status(b).state is not Phase.RUNNING},
            )
            running = {b for b in names if f.status(b).state is Phase.RUNNING}
            actions = f.send(Restart(tuple(names), rolling=r.n), at)
            for b in names:
                excuse(b, b in running)  # started by it: down by no rolling stop
            rolling.append(r)
            run(actions)
        elif what == "stop":
            run(f.send(Stop((name,)), at))
        elif what == "start":
            actions = f.send(Start((name,)), at)
            excuse(name, was_running)
            run(actions)
        elif what == "reload" and not p.removed:
            kept = tuple(q.spec for n, q in f.core.procs.items() if n != name and not q.removed)
            run(f.send(Reload(kept, policy), at))
        elif what == "hub" and f.core.procs[HUB].alive:
            run(f.exited(HUB, code=1, at=at))
        else:
            run(f.tick(at))
    # Left alone, every rolling restart comes to an end: no bot waits for its turn for ever.
    for _ in range(1000):
        deadline = f.core.next_deadline()
        if deadline is None:
            break
        run(f.tick(max(deadline, f.now)))
    waiting = [s.name for s in f.core.status(f.now) if "its turn" in (s.reason or "")]
    assert waiting == [], waiting
    for i, t in enumerate(starts):
        in_window = [u for u in starts[i:] if u < t + TWITCH_LOGIN_WINDOW_SEC]
        assert len(in_window) <= limit, (limit, starts)


# --- rolling restarts (restart all, a new hub, --rolling N) -------------------


def _down(f: Fleet, names: list[str]) -> list[str]:
    """The bots that count as down for a rolling restart: wanted, neither running nor parked."""
    return [
        s.name
        for s in f.core.status(f.now)
        if s.name in names and s.want and s.state not in (Phase.RUNNING, Phase.FAILED)
    ]


def _rolling(specs: list[ProcessSpec], policy: Policy | None = None) -> Fleet:
    """A fleet of running bots (booted through the login windows), its clock at 1000."""
    f = Fleet(specs, policy)
    pending = spawns(f.tick(0.0))
    while pending or f.core.next_deadline() is not None:
        if not pending:
            pending = spawns(f.tick(f.core.next_deadline()))
            continue
        name = pending.pop(0)
        actions = f.spawned(name)
        if f.status(name).state is not Phase.RUNNING:
            actions += f.send(Ready(name))
        pending += spawns(actions)
    assert all(s.state is Phase.RUNNING for s in f.core.status(f.now))
    f.now = 1000.0
    return f


def test_a_rolling_restart_keeps_at_most_n_bots_down_until_each_is_ready_again() -> None:
    names = [f"roll_{i}" for i in range(6)]
    f = _rolling([spec(names[0], ready="notify"), *(spec(n) for n in names[1:])])
    actions = f.send(Restart(tuple(names), rolling=2))
    assert [k[0] for k in kills(actions)] == names[:2]
    assert f.status(names[2]).reason == "waiting for its turn in a rolling restart (0 of 6 done)"
    assert f.status(names[2]).state is Phase.RUNNING
    restarted: list[str] = []
    pending = [k[0] for k in kills(actions)]
    while pending:
        name = pending.pop(0)
        assert len(_down(f, names)) <= 2
        actions = f.exited(name, sig=TERM, at=f.now + 1.0)
        assert spawns(actions) == [name]
        actions = f.spawned(name)
        if f.status(name).state is not Phase.RUNNING:
            assert kills(actions) == []  # not ready yet: nobody else goes down
            actions = f.send(Ready(name))
        restarted.append(name)
        pending += [k[0] for k in kills(actions)]
    assert sorted(restarted) == names  # each once
    assert all(f.status(n).restarts == 1 for n in names)
    assert all(f.status(n).reason is None for n in names)


def test_a_rolling_restart_stops_bots_only_as_login_slots_free() -> None:
    names = [f"slot_{i}" for i in range(7)]
    f = _rolling([spec(n) for n in names], Policy(logins_per_window=3))
    actions = f.send(Restart(tuple(names)))
    assert [k[0] for k in kills(actions)] == names[:3]  # three free slots: three down
    assert f.status(names[3]).reason == "waiting for its turn in a rolling restart (0 of 7 done)"
    for name in names[:3]:
        assert spawns(f.exited(name, sig=TERM, at=1001.0)) == [name]
        assert kills(f.spawned(name)) == []  # the window is full: the rest stay up
    assert f.core.next_deadline() == 1001.0 + LOGIN_WINDOW_SEC
    actions = f.tick(1001.0 + LOGIN_WINDOW_SEC)
    assert [k[0] for k in kills(actions)] == names[3:6]
    for name in names[3:6]:
        actions = f.exited(name, sig=TERM)
        assert spawns(actions) == [name]  # a stopped bot never waits for a login slot
        f.spawned(name)
    assert f.status(names[6]).reason == "waiting for its turn in a rolling restart (6 of 7 done)"


def test_a_failed_turn_holds_its_place_until_the_bot_runs_or_is_parked() -> None:
    f = _rolling([spec(A, ready="notify"), spec(B), spec(C)], Policy(give_up_after=2))
    actions = f.send(Restart((A, B, C), rolling=1))
    assert [k[0] for k in kills(actions)] == [A]
    f.exited(A, sig=TERM, at=1001.0)
    f.spawned(A)
    actions = f.exited(A, code=1, at=1002.0)  # the new code fails at start-up
    assert notes(actions, "backoff")
    assert kills(actions) == []  # backing off is still down: B waits
    assert f.status(B).reason == "waiting for its turn in a rolling restart (0 of 3 done)"
    assert spawns(f.tick(1003.0)) == [A]
    f.spawned(A)
    actions = f.exited(A, code=1, at=1004.0)
    assert notes(actions, "parked")
    assert [k[0] for k in kills(actions)] == [B]  # parked: out of the count, B's turn
    assert f.status(C).reason == "waiting for its turn in a rolling restart (1 of 3 done)"


def test_a_stop_or_a_reload_ends_a_queued_bots_turn_and_a_crash_is_its_restart() -> None:
    x = "xray_ch"
    f = _rolling([spec(A), spec(B), spec(C), spec(x)])
    actions = f.send(Restart((A, B, C, x), rolling=1))
    assert [k[0] for k in kills(actions)] == [A]
    assert kills(f.send(Stop((B,)))) == [(B, TERM, False)]  # the operator's stop, at once
    actions = f.send(Reload((spec(A), spec(B), spec(x)), f.policy))
    assert kills(actions) == [(C, TERM, False)]  # removed
    assert f.status(x).reason == "waiting for its turn in a rolling restart (2 of 4 done)"
    f.exited(x, code=1)  # crashes while waiting: that is its restart
    assert (f.status(x).reason or "").startswith("exited 1; restarting")
    f.exited(A, sig=TERM)
    actions = f.spawned(A)
    assert kills(actions) == []  # x backing off is down: nothing more goes down
    assert spawns(f.tick(f.now + 1.0)) == [x]
    f.spawned(x)
    assert f.status(x).reason is None
    assert f.core.rollouts == []  # every turn done


def test_a_rolling_restart_waits_for_a_new_hub_and_restarts_each_bot_once() -> None:
    f = Fleet([hub_spec(ready="notify"), spec(A), spec(B), spec(C)])
    f.boot()
    actions = f.send(Restart((HUB, A, B, C), rolling=1), at=100.0)
    assert kills(actions) == [(HUB, TERM, False)]  # the hub at once; the bots wait for it
    f.exited(HUB, sig=TERM)
    f.spawned(HUB)
    assert kills(f.tick(110.0)) == []
    actions = f.send(Ready(HUB))
    assert kills(actions) == [(A, TERM, False)]  # one at a time, each once
    for bot, following in ((A, B), (B, C), (C, None)):
        f.exited(bot, sig=TERM)
        actions = f.spawned(bot)
        assert kills(actions) == ([] if following is None else [(following, TERM, False)])
    assert [f.status(n).restarts for n in (A, B, C)] == [1, 1, 1]


def test_a_hub_restart_during_a_rolling_restart_keeps_its_limit() -> None:
    f = Fleet([hub_spec(ready="notify"), spec(A), spec(B), spec(C)])
    f.boot()
    actions = f.send(Restart((A, B, C), rolling=1), at=100.0)
    assert kills(actions) == [(A, TERM, False)]
    f.exited(A, sig=TERM)
    f.spawned(A)  # A done; B's turn
    f.exited(HUB, code=1, at=101.0)  # the hub crashes while B is on its way down
    f.exited(B, sig=TERM)
    assert f.status(B).reason == "waiting for the hub to be ready"
    assert spawns(f.tick(102.0)) == [HUB]
    f.spawned(HUB)
    actions = f.send(Ready(HUB))
    # B starts for the new hub; A (restarted for the old hub) must go again, but only
    # once B is up: the operator's limit holds for a hub-triggered restart too.
    assert spawns(actions) == [B]
    assert kills(actions) == []
    assert f.status(A).reason == "waiting for its turn to restart for the new hub (0 of 1 done)"
    actions = f.spawned(B)
    assert kills(actions) == [(C, TERM, False)]
    f.exited(C, sig=TERM)
    actions = f.spawned(C)
    assert kills(actions) == [(A, TERM, False)]
    f.exited(A, sig=TERM)
    f.spawned(A)
    assert [f.status(n).restarts for n in (A, B, C)] == [2, 1, 1]
    assert f.core.rollouts == []


def test_the_restart_for_a_new_hub_rolls_under_the_login_limit() -> None:
    names = [f"hubroll_{i}" for i in range(5)]
    f = _rolling([hub_spec(ready="notify"), *(spec(n) for n in names)], Policy(logins_per_window=2))
    f.exited(HUB, code=1, at=1100.0)
    f.tick(1101.0)
    f.spawned(HUB)
    actions = f.send(Ready(HUB))
    assert [k[0] for k in kills(actions)] == names[:2]
    assert notes(actions, "restarting")[0].message == "restarting to reconnect to the new hub"
    assert f.status(names[2]).reason == (
        "waiting for its turn to restart for the new hub (0 of 5 done)"
    )


def test_a_bot_still_waiting_for_its_turn_is_not_restarted_yet_in_the_answer() -> None:
    f = _rolling([spec(A), spec(B)])
    before = {n: Before(f.core.procs[n].phase, f.core.procs[n].pid) for n in (A, B)}
    f.send(Restart((A, B), rolling=1))
    assert not settled("restart", f.core.procs[B], before[B])
    assert result("restart", B, f.core.procs[B], before[B]) == {
        "name": B,
        "ok": False,
        "result": "not restarted yet",
        "pid": before[B].pid,
        "state": "running",
        "message": "waiting for its turn in a rolling restart (0 of 2 done)",
    }
    f.exited(A, sig=TERM)
    f.spawned(A)
    assert settled("restart", f.core.procs[A], before[A])
    assert result("restart", A, f.core.procs[A], before[A])["result"] == "restarted"


def test_a_reload_that_changes_every_bots_command_restarts_them_in_turns() -> None:
    names = [f"changed_{i}" for i in range(5)]
    f = _rolling([spec(n) for n in names], Policy(logins_per_window=2))
    new = tuple(spec(n, argv=("prog", n, "--new")) for n in names)
    actions = f.send(Reload(new, f.policy))
    assert len(notes(actions, "changed")) == 5
    assert [k[0] for k in kills(actions)] == names[:2]
    assert f.status(names[2]).reason == "waiting for its turn in a rolling restart (0 of 5 done)"
    f.exited(names[0], sig=TERM)
    assert [a.spec for a in f.exited(names[1], sig=TERM) if isinstance(a, Spawn)] == [new[1]]


# --- parked processes tried again (a network outage heals by itself) ----------


def _retrying() -> Fleet:
    policy = Policy(
        delay_sec=1.0, give_up_after=2, reset_after_sec=60.0,
        retry_parked_sec=60.0, retry_parked_max_sec=200.0,
    )  # fmt: skip
    f = Fleet([spec(A)], policy)
    assert spawns(f.tick(0.0)) == [A]
    f.spawned(A)
    return f


def _park(f: Fleet) -> list[Action]:
    return f.crash_until_parked(A, code=1, sig=None)


def test_a_parked_process_is_tried_again_by_itself_at_a_slow_doubling_pace() -> None:
    f = _retrying()
    actions = _park(f)
    parked_at = f.now
    assert notes(actions, "parked")[0].message.endswith("trying again by itself in 60 s")
    assert f.status(A).state is Phase.FAILED
    f.tick(parked_at + 20.0)
    reason = f.status(A).reason
    assert reason is not None
    assert reason.endswith("trying again by itself in 40 s")
    assert f.core.next_deadline() == parked_at + 60.0
    retry = f.tick(parked_at + 60.0)
    assert spawns(retry) == [A]
    assert notes(retry, "restarting")[0].message == "trying again after being parked"
    assert f.status(A).restarts > 0
    # One try: failing again parks it at once, for twice as long.
    f.spawned(A)
    again = f.exited(A, code=1)
    assert notes(again, "parked")[0].message == (
        "exited 1 again, when tried after being parked (see its log); "
        "trying again by itself in 120 s"
    )
    assert f.core.next_deadline() == f.now + 120.0
    # Capped.
    assert spawns(f.tick(f.now + 120.0)) == [A]
    f.spawned(A)
    f.exited(A, code=1)
    assert f.core.next_deadline() == f.now + 200.0


def test_after_a_retry_that_runs_well_the_pace_starts_over() -> None:
    f = _retrying()
    _park(f)
    assert spawns(f.tick(f.now + 60.0)) == [A]
    f.spawned(A)
    f.send(Ready(A))
    f.tick(f.now + 61.0)  # healthy for longer than reset_after_sec
    f.exited(A, code=1)  # one failure: a backoff, not a parking
    assert f.status(A).state is Phase.BACKOFF
    f.tick(f.core.next_deadline())
    f.spawned(A)
    actions = f.exited(A, code=1)
    assert notes(actions, "parked")[0].message.endswith("trying again by itself in 60 s")


def test_an_operator_stop_or_start_ends_the_retries() -> None:
    f = _retrying()
    _park(f)
    f.send(Stop((A,)))
    assert f.core.next_deadline() is None
    assert spawns(f.tick(f.now + 600.0)) == []
    f.send(Start((A,)))
    assert f.status(A).state is Phase.STARTING


def test_retries_off_keeps_a_parked_process_parked() -> None:
    f = Fleet([spec(A)], Policy(give_up_after=2))
    f.tick(0.0)
    f.spawned(A)
    f.crash_until_parked(A, code=1, sig=None)
    assert f.core.next_deadline() is None
    reason = f.status(A).reason
    assert reason is not None
    assert "trying again" not in reason


# --- reasons in the process's own words ---------------------------------------------


def _park_saying(lines: tuple[str, ...], token_state: str = "unchecked") -> str:
    f = Fleet([spec(A, ready="file")], Policy(give_up_after=2))  # fails before ready
    f.core.procs[A].token_state = token_state
    f.tick(0.0)
    f.spawned(A)
    while True:
        actions = f.send(Exited(A, f.pid[A], code=1, last_lines=lines))
        parked = notes(actions, "parked")
        if parked:
            return parked[0].message
        assert spawns(f.tick(f.core.next_deadline())) == [A]
        f.spawned(A)


def test_a_parked_reason_quotes_the_process_own_last_line() -> None:
    line = (
        "aiohttp.client_exceptions.ClientConnectorError: "
        "Cannot connect to host irc.chat.twitch.tv:6697"
    )
    reason = _park_saying(("Traceback (most recent call last):", line))
    assert reason == f'exited 1 2 times within 1.0 s at start-up: "{line}"'
    assert "token" not in reason  # no guess where it said why


def test_the_token_hint_only_where_the_token_may_be_the_cause() -> None:
    assert "token revoked?" in _park_saying(())  # unchecked: it may be
    silent_valid = _park_saying((), token_state="valid")
    assert silent_valid == "exited 1 2 times within 1.0 s at start-up (see its log)"


def test_a_process_line_is_sanitised_and_cut_in_a_reason() -> None:
    reason = _park_saying(("\x1b[31mred\x1b[0m\tand   spaced" + "x" * 400,))
    quoted = reason.split(": ", 1)[1]
    assert "\x1b" not in quoted
    assert quoted.startswith('"?[31mred?[0m and spaced')
    assert len(quoted) == MAX_WORDS + 2  # the quotes
    assert quoted.endswith('…"')


def test_many_bots_failing_alike_is_said_once_for_the_fleet() -> None:
    names = [f"alike_{i}" for i in range(8)]
    f = Fleet([spec(n) for n in names], Policy(give_up_after=0))
    f.tick(0.0)
    for n in names:
        f.spawned(n)
    words = ("socket.gaierror: [Errno -3] Temporary failure in name resolution",)
    said = []
    for i, n in enumerate(names):
        actions = f.send(Exited(n, f.pid[n], code=1, last_lines=words), at=float(i) * 0.01)
        said += [x.message for x in notes(actions, "failing-alike")]
    quoted = f'"{words[0]}"'
    # At 3, then each time it doubles: not once per bot.
    assert said == [f"3 bots failing alike: {quoted}", f"6 bots failing alike: {quoted}"]
    assert f.core.failing_alike() == (8, quoted)
