"""When each process entered its state, and its last few exits: for ``kissbotctl status NAME``.

The core keeps what it decides with (``last_exit``, the monotonic ``started_at``);
an operator asks *since when* and *what happened before*, on the wall clock.
The daemon tells this module of every Note (:meth:`History.on_note`) and, after
each batch of events, lets it look at the states (:meth:`History.refresh`);
``daemon/status.py`` puts what it kept in the STATUS object (``since``,
``exits``). Bounded: :data:`EXITS_KEPT` exits per process, and a process a
reload removed is forgotten.
"""

from __future__ import annotations

from ..protocol import NoteKind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .. import core
    from ..status import ExitEntry

# Exits kept per process: enough to see a pattern ("exited 1" three times, a
# watchdog kill), few enough for the STATUS object of 1000 bots.
EXITS_KEPT = 5
# The Notes of an exit: the core sends exactly one of them for each (a crash, a
# stop, a clean exit) or for a spawn that failed; its last_exit then says how.
EXIT_KINDS = frozenset({NoteKind.EXITED, NoteKind.STOPPED, NoteKind.SPAWN_FAILED})


class History:
    """Per process: its shown state and since when (Unix time), its last exits."""

    def __init__(self, started_at: float) -> None:
        # Before the first refresh, every process is taken to be in its state since
        # the supervisor started: nothing older is known.
        self._started_at = started_at
        self._since: dict[str, tuple[str, float]] = {}
        self._exits: dict[str, list[ExitEntry]] = {}

    def on_note(self, fleet: core.Core, name: str, kind: str, wall: float) -> None:
        """Keep the exit a Note reports, with the core's words for it."""
        proc = fleet.procs.get(name)
        if kind not in EXIT_KINDS or proc is None or proc.last_exit is None:
            return
        exits = self._exits.setdefault(name, [])
        exits.append({"time": round(wall, 3), "exit": proc.last_exit})
        del exits[:-EXITS_KEPT]

    def refresh(self, fleet: core.Core, wall: float) -> None:
        """Note the time of each state change since the last call (one look per process)."""
        for name, proc in fleet.procs.items():
            state = str(fleet.shown_state(proc))
            known = self._since.get(name)
            if known is None:
                self._since[name] = (state, self._started_at)
            elif known[0] != state:
                self._since[name] = (state, wall)
        if len(self._since) > len(fleet.procs):  # a reload removed some
            for gone in self._since.keys() - fleet.procs.keys():
                del self._since[gone]
                self._exits.pop(gone, None)

    def since(self, name: str, state: str) -> float | None:
        """When ``name`` entered ``state`` (Unix time); None if not seen in it yet."""
        known = self._since.get(name)
        return known[1] if known is not None and known[0] == state else None

    def exits(self, name: str) -> list[ExitEntry]:
        """Its last exits, oldest first (a copy)."""
        return list(self._exits.get(name, ()))
