"""Since when each process is in its state, and its last exits (daemon/history.py),
driven by the real core with a fake clock, as the daemon drives it."""

from __future__ import annotations

from kissbot_supervisor.core import Action, Event, Note, Policy, Reload
from kissbot_supervisor.daemon.history import EXITS_KEPT, History

from .test_core import Fleet, spec

STARTED = 1_000_000.0  # the supervisor's start, Unix time


class Watched(Fleet):
    """A fleet whose every batch of actions goes through History, as Supervisor.feed does;
    the wall clock is the fake one plus STARTED."""

    def __init__(self, names: list[str], policy: Policy | None = None) -> None:
        super().__init__([spec(n) for n in names], policy)
        self.history = History(STARTED)
        self.history.refresh(self.core, STARTED)

    def send(self, event: Event, at: float | None = None) -> list[Action]:
        actions = super().send(event, at)
        wall = STARTED + self.now
        for action in actions:
            if isinstance(action, Note):
                self.history.on_note(self.core, action.name, action.kind, wall)
        self.history.refresh(self.core, wall)
        return actions


def test_before_any_change_a_state_dates_from_the_supervisors_start() -> None:
    fleet = Watched(["el_serda"])
    assert fleet.history.since("el_serda", "starting") == STARTED
    assert fleet.history.since("el_serda", "running") is None  # not in that state
    assert fleet.history.exits("el_serda") == []


def test_each_state_change_is_dated_and_the_exits_kept_oldest_first() -> None:
    fleet = Watched(["el_serda"], Policy(delay_sec=1.0, give_up_after=3))
    fleet.spawned("el_serda", at=1.0)
    assert fleet.history.since("el_serda", "running") == STARTED + 1.0
    fleet.exited("el_serda", code=1, at=5.0)
    assert fleet.history.since("el_serda", "backoff") == STARTED + 5.0
    assert fleet.history.exits("el_serda") == [{"time": STARTED + 5.0, "exit": "exited 1"}]
    fleet.tick(6.0)
    fleet.spawned("el_serda", at=6.0)
    fleet.exited("el_serda", sig=9, at=7.0)
    exits = fleet.history.exits("el_serda")
    assert [e["exit"] for e in exits] == ["exited 1", "killed by SIGKILL"]
    assert exits[1]["time"] == STARTED + 7.0


def test_the_exits_are_bounded() -> None:
    fleet = Watched(["el_serda"], Policy(delay_sec=1.0, give_up_after=100, reset_after_sec=1e9))
    for i in range(EXITS_KEPT + 3):
        at = 10.0 * (i + 1)
        fleet.tick(at)
        fleet.spawned("el_serda", at=at)
        fleet.exited("el_serda", code=i, at=at + 1)
    exits = fleet.history.exits("el_serda")
    assert [e["exit"] for e in exits] == [f"exited {i}" for i in range(3, EXITS_KEPT + 3)]


def test_a_process_a_reload_removed_is_forgotten() -> None:
    fleet = Watched(["el_serda", "morthy"])
    fleet.spawned("morthy", at=1.0)
    fleet.exited("morthy", code=1, at=2.0)  # in backoff: removed at once by the reload
    assert fleet.history.exits("morthy") != []
    fleet.send(Reload((spec("el_serda"),), fleet.policy, ()), at=3.0)
    assert list(fleet.core.procs) == ["el_serda"]
    assert fleet.history.exits("morthy") == []
    assert fleet.history.since("morthy", "backoff") is None
