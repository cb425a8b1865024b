"""Readiness signals that no service manager gives: a ready file, a socket that answers.

Shared by both backends (systemd knows READY=1, not ``pids/CH.ready`` nor the
hub's socket). ``pids/CH.ready`` is watched with inotify; the hub socket is
probed with a connect every 50 ms, and only while the hub is starting.

A socket that answers is the hub's only if the kernel says so: the listener's
PID (``SO_PEERCRED``) must be the hub's main process or one of its
descendants. Any process can listen on the path first (in ``/tmp``, or in the
bots' own workdir), and bots told the hub is ready would say hello to it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from ..runtime.inotify import IN_CLOSE_WRITE, IN_CREATE, IN_MOVED_TO
from ..runtime.loop import Loop, Timer
from ..runtime.procinfo import descends_from, peer_credentials

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..runtime.inotify import Events
    from ..runtime.log import Log

SOCKET_PROBE_SEC = 0.05
# Flag files a KissBot bot leaves behind when killed (it has no SIGTERM handler).
STALE_FLAGS = ("pid", "starting", "irc", "eventsub", "ready")


def remove_stale_flags(pids_dir: Path, name: str) -> None:
    """Before a start: a stale CH.ready would otherwise pass for the new bot's."""
    for flag in STALE_FLAGS:
        (pids_dir / f"{name}.{flag}").unlink(missing_ok=True)


class ReadinessWatcher:
    """Calls ``on_ready(name)`` once per ``watch`` when the process's signal shows up."""

    def __init__(
        self,
        loop: Loop,
        pids_dir: Path,
        hub_socket: Path,
        on_ready: Callable[[str], None],
        log: Log,
        on_waiting: Callable[[str, str], None],
    ) -> None:
        self.loop = loop
        self.pids_dir = pids_dir
        self.hub_socket = hub_socket
        self._on_ready = on_ready
        self._on_waiting = on_waiting  # why a socket process is not ready, for its status
        self._log = log  # where a foreign listener on the hub's path is reported
        self._files: set[str] = set()  # names waiting for pids/NAME.ready
        self._probes: dict[str, Timer] = {}
        self._owners: dict[str, Callable[[], int | None]] = {}
        self._squatters: dict[str, int] = {}  # name -> a foreign listener already reported
        self._watch = loop.watches.subscribe(
            pids_dir, IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE, self._on_files
        )

    def watch(self, name: str, mode: str, owner: Callable[[], int | None] = lambda: None) -> None:
        """Start waiting for ``name`` (``file`` or ``socket`` mode; others are not ours).

        ``owner`` gives the process's main PID as the backend knows it (None: not
        yet): only a listener it owns makes a ``socket`` process ready.
        """
        self.forget(name)
        if mode == "file":
            self._files.add(name)
            if (self.pids_dir / f"{name}.ready").exists():
                self._ready(name)
        elif mode == "socket":
            self._owners[name] = owner
            self._probe(name)

    def forget(self, name: str) -> None:
        self._files.discard(name)
        self._owners.pop(name, None)
        self._squatters.pop(name, None)
        timer = self._probes.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _ready(self, name: str) -> None:
        self.forget(name)
        self._on_ready(name)

    def _on_files(self, events: Events) -> None:
        for filename, _mask in events:
            if filename is None:  # queue overflow: look at every file we wait for
                for name in list(self._files):
                    if (self.pids_dir / f"{name}.ready").exists():
                        self._ready(name)
                continue
            name, dot, suffix = filename.rpartition(".")
            if dot and suffix == "ready" and name in self._files:
                self._ready(name)

    def _probe(self, name: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.setblocking(False)
            try:
                s.connect(str(self.hub_socket))
                listener: int | None = peer_credentials(s)[0]
            except OSError:
                listener = None
        owner = self._owners.get(name, lambda: None)()
        if listener is not None and owner is not None and descends_from(listener, owner):
            self._probes.pop(name, None)
            self._ready(name)
            return
        if listener is not None and owner is not None and self._squatters.get(name) != listener:
            self._squatters[name] = listener
            self._log.warning(
                name,
                f"{self.hub_socket} answers, but from PID {listener}, not from this "
                "process: another process holds its socket path; waiting for its own",
            )
            self._on_waiting(
                name,
                f"not ready: {self.hub_socket} is held by PID {listener}, another process; "
                "waiting for this one's own listener",
            )
        self._probes[name] = self.loop.call_later(SOCKET_PROBE_SEC, lambda: self._probe(name))

    def close(self) -> None:
        for name in list(self._probes):
            self.forget(name)
        self.loop.watches.cancel(self._watch)
