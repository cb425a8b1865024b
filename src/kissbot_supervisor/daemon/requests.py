"""Control requests: answered at once, or when the outcome they wait for is settled.

``status``, ``metrics`` and ``reload`` are answered at once. ``start``,
``stop`` and ``restart`` become core events; like ``systemctl start`` they are
answered when every named process has settled (``core/commands.py`` says
when, and what the result is) or when the wait limit runs out. The limit is
for the next outcome: it starts again each time a process settles, since a
restart of many bots goes in turns (core.Rollout) and may take minutes in all.
A request that asks for progress is told that limit at once and each
process's result as it settles (protocol.py), so that a client never gives up
before we answer.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import core
from ..core.commands import Before, result, settled, wait_limit
from ..core.records import field, record
from ..kissbot.names import unknown_names_text
from ..protocol import progress_message
from ..runtime.loop import Loop, Timer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..protocol import Request
    from ..status import Status
    from .control import Reply


@record(frozen=False)
class _Waiter:
    cmd: str
    before: dict[str, Before]
    reply: Reply
    progress: bool = False  # progress lines asked for
    limit: float = 0.0  # seconds the next outcome may take
    timer: Timer | None = None
    settled: int = 0  # names settled so far
    reported: set[str] = field(factory=set)  # names whose result a progress line gave


class Requests:
    def __init__(
        self,
        loop: Loop,
        fleet: core.Core,
        feed: Callable[[core.Event], None],
        status: Callable[[], Status],
        metrics: Callable[[], str],
        reload: Callable[[], dict[str, Any]],
    ) -> None:
        self.loop = loop
        self.core = fleet
        self._feed = feed
        self._status = status
        self._metrics = metrics
        self._reload = reload
        self._waiters: list[_Waiter] = []

    def handle(self, request: Request, reply: Reply) -> None:
        if request.cmd == "status":
            reply({"ok": True, "status": self._status()})
            return
        if request.cmd == "metrics":
            reply({"ok": True, "metrics": self._metrics()})
            return
        if request.cmd == "reload":
            reply(self._reload())
            return
        names = self._resolve(request.names)
        if isinstance(names, str):
            reply({"ok": False, "error": names})
            return
        before = {n: Before(self.core.procs[n].phase, self.core.procs[n].pid) for n in names}
        event: core.Event
        if request.cmd == "start":
            event = core.Start(tuple(names))
        elif request.cmd == "stop":
            event = core.Stop(tuple(names))
        else:
            event = core.Restart(tuple(names), rolling=request.rolling)
        limit = max(wait_limit(request.cmd, self.core.procs[n], self.core.policy) for n in names)
        waiter = _Waiter(request.cmd, before, reply, request.progress, limit)
        waiter.timer = self.loop.call_later(limit, lambda: self._answer(waiter))
        self._waiters.append(waiter)
        if request.progress:  # before the event: a command settled at once answers in it
            reply(progress_message(limit, names))
        self._feed(event)

    def check_waiters(self) -> None:
        """After the core has moved: answer every request whose outcome is settled,
        and tell those that asked for progress what has settled meanwhile."""
        for w in list(self._waiters):
            done = [n for n, b in w.before.items() if settled(w.cmd, self.core.procs.get(n), b)]
            if len(done) == len(w.before):
                self._answer(w)
                continue
            if len(done) > w.settled and w.timer is not None:
                # Something settled: the next outcome has the whole limit again.
                w.settled = len(done)
                w.timer.cancel()
                w.timer = self.loop.call_later(w.limit, self._answer_later(w))
            if w.progress and w.timer is not None:
                new = [n for n in done if n not in w.reported]
                if new:
                    w.reported.update(new)
                    results = [self._result(w, n) for n in new]
                    waiting = [n for n in w.before if n not in done]
                    w.reply(progress_message(w.timer.when - self.loop.now(), waiting, results))

    def _answer_later(self, w: _Waiter) -> Callable[[], None]:
        return lambda: self._answer(w)

    def _answer(self, w: _Waiter) -> None:
        if w not in self._waiters:
            return
        self._waiters.remove(w)
        if w.timer is not None:
            w.timer.cancel()
        w.reply({"ok": True, "results": [self._result(w, n) for n in w.before]})

    def _result(self, w: _Waiter, name: str) -> dict[str, Any]:
        return result(w.cmd, name, self.core.procs.get(name), w.before[name])

    def _resolve(self, names: tuple[str, ...]) -> list[str] | str:
        """The processes named (``all`` for every one), or the error text for unknown names.

        The names are the processes' own already (protocol.Request folds case)."""
        known = self.core.names()
        out: list[str] = []
        unknown: list[str] = []
        for name in names:
            if name == "all":
                out.extend(n for n in known if n not in out)
            elif name in self.core.procs and not self.core.procs[name].removed:
                if name not in out:
                    out.append(name)
            elif name not in unknown:
                unknown.append(name)
        if unknown:
            return unknown_names_text(unknown, known)
        return out
