"""Readiness signals that no service manager gives: a ready file, a hub that answers.

Shared by both backends (systemd knows READY=1, not ``pids/CH.ready`` nor the
hub's socket). ``pids/CH.ready`` is watched with inotify; the hub is probed on
the supervisor's own loop (non-blocking sockets and timers: no thread), and
only while it is starting. Its modes (``hub.ready``):

* ``socket``: its socket accepts a connection (probed every 50 ms);
* ``protocol``: a ``hello`` + ``ping`` on its socket gets the ``pong``, as a
  bot's would (:mod:`.hubcheck`); a new try each second after a try that got no
  pong within ``PROTOCOL_REPLY_SEC``;
* ``db``: its socket accepts, and ``hub_state.ws_state`` is ``connected`` in
  the token DB (read-only, every ``DB_PROBE_SEC``).

The real hub binds its socket before its Twitch WebSocket is up, and without
Twitch accepts connections and answers nothing: only ``protocol`` and ``db``
tell such a wedged hub from a working one. Until it is ready, the reason it is
not goes to its status (``on_waiting``) and, when it changes, to the log.

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
from ..runtime.loop import Loop, Timer, received
from ..runtime.procinfo import descends_from, peer_credentials
from . import hubcheck

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..runtime.inotify import Events
    from ..runtime.log import Log

SOCKET_PROBE_SEC = 0.05
# A hub that serves its bots answers a ping within milliseconds; one that has not
# answered in this long is not serving (a wedged hub never answers at all).
PROTOCOL_REPLY_SEC = 2.0
PROTOCOL_RETRY_SEC = 1.0  # pause after a try that got no pong, before a new connection
DB_PROBE_SEC = 0.5
# Flag files a KissBot bot leaves behind when killed (it has no SIGTERM handler).
STALE_FLAGS = ("pid", "starting", "irc", "eventsub", "ready")
HUB_MODES = ("socket", "protocol", "db")


def remove_stale_flags(pids_dir: Path, name: str) -> None:
    """Before a start: a stale CH.ready would otherwise pass for the new bot's."""
    for flag in STALE_FLAGS:
        (pids_dir / f"{name}.{flag}").unlink(missing_ok=True)


class _Talk:
    """One ``protocol`` probe connection: the socket and what came back on it."""

    __slots__ = ("replies", "sock")

    def __init__(self, sock: socket.socket, replies: hubcheck.Replies) -> None:
        self.sock = sock
        self.replies = replies


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
        hub_db: Path | None = None,
        on_alive: Callable[[str], None] | None = None,
    ) -> None:
        """``hub_db``: the token DB the hub writes ``hub_state`` to (``db`` mode);
        ``on_alive(name)``: a liveness check passed (see :meth:`watch`)."""
        self.loop = loop
        self.pids_dir = pids_dir
        self.hub_socket = hub_socket
        self._hub_db = hub_db
        self._on_ready = on_ready
        self._on_alive = on_alive
        self._on_waiting = on_waiting  # why a socket process is not ready, for its status
        self._log = log  # where a foreign listener on the hub's path is reported
        self._files: set[str] = set()  # names waiting for pids/NAME.ready
        self._probes: dict[str, Timer] = {}
        self._modes: dict[str, str] = {}  # name -> its hub mode (socket, protocol, db)
        self._owners: dict[str, Callable[[], int | None]] = {}
        self._squatters: dict[str, int] = {}  # name -> a foreign listener already reported
        self._talks: dict[str, _Talk] = {}
        self._said: dict[str, str] = {}  # name -> the last reason given, said once
        self._every: dict[str, float] = {}  # name -> seconds between liveness checks
        self._live: set[str] = set()  # ready, and checked for liveness
        self._check_started: dict[str, float] = {}  # name -> when its current check began
        self._watch = loop.watches.subscribe(
            pids_dir, IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE, self._on_files
        )

    def watch(
        self,
        name: str,
        mode: str,
        owner: Callable[[], int | None] = lambda: None,
        every: float = 0.0,
    ) -> None:
        """Start waiting for ``name`` (``file`` mode, or a hub mode; others are not ours).

        ``owner`` gives the process's main PID as the backend knows it (None: not
        yet): only a listener it owns makes a hub-mode process ready. ``every`` > 0:
        once ready, the same check (``protocol`` or ``db``; ``protocol`` for the other
        modes, which keep their own readiness signal) is repeated at that pace for as
        long as it runs, and each one that passes calls ``on_alive`` (the core's
        watchdog deadline does the rest).
        """
        self.forget(name)
        if every > 0:
            self._every[name] = every
            if mode not in HUB_MODES:
                self._live.add(name)  # ready by its own signal (READY=1, or at once)
            mode = mode if mode in ("protocol", "db") else "protocol"
        if mode == "file":
            self._files.add(name)
            if (self.pids_dir / f"{name}.ready").exists():
                self._ready(name)
        elif mode in HUB_MODES:
            self._owners[name] = owner
            self._modes[name] = mode
            self._probe(name)

    def forget(self, name: str) -> None:
        self._files.discard(name)
        self._owners.pop(name, None)
        self._modes.pop(name, None)
        self._squatters.pop(name, None)
        self._said.pop(name, None)
        self._every.pop(name, None)
        self._live.discard(name)
        self._check_started.pop(name, None)
        self._end_talk(name)
        timer = self._probes.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _ready(self, name: str) -> None:
        self.forget(name)
        self._on_ready(name)

    def _passed(self, name: str) -> None:
        """A hub check passed: ready, or (liveness) alive; the next check is scheduled."""
        self._end_talk(name)
        timer = self._probes.pop(name, None)
        if timer is not None:
            timer.cancel()
        if self._every.get(name, 0.0) <= 0:
            self._ready(name)
            return
        self._said.pop(name, None)  # a later failure is said again
        first = name not in self._live
        self._live.add(name)
        if self._on_alive is not None:
            self._on_alive(name)
        if first:
            self._on_ready(name)
        self._next_check(name)

    def _failed(self, name: str, why: str, retry: float) -> None:
        """A hub check failed: said (once per reason), and tried again."""
        if name in self._live:
            self._waiting(name, why.replace("not ready: ", "liveness check failed: ", 1))
            self._next_check(name)
            return
        self._waiting(name, why)
        self._again(name, retry)

    def _next_check(self, name: str) -> None:
        """At a steady pace: ``every`` after the start of the last check."""
        due = self._check_started.get(name, self.loop.now()) + self._every[name]
        self._again(name, max(0.0, due - self.loop.now()))

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

    def _again(self, name: str, delay: float) -> None:
        self._probes[name] = self.loop.call_later(delay, lambda: self._probe(name))

    def _waiting(self, name: str, why: str) -> None:
        """Tell status (and the log) why ``name`` is not ready, when that changes."""
        if self._said.get(name) == why:
            return
        self._said[name] = why
        self._log.info(name, why)
        self._on_waiting(name, why)

    def _probe(self, name: str) -> None:
        self._probes.pop(name, None)
        self._check_started[name] = self.loop.now()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.setblocking(False)
        try:
            s.connect(str(self.hub_socket))
            listener: int | None = peer_credentials(s)[0]
        except OSError:
            listener = None
        owner = self._owners.get(name, lambda: None)()
        if listener is not None and owner is not None and descends_from(listener, owner):
            mode = self._modes.get(name)
            if mode == "protocol":
                self._talk(name, s)  # the connection is the probe's now
                return
            s.close()
            if mode == "db":
                self._check_db(name)
                return
            self._passed(name)
            return
        s.close()
        if name in self._live:
            self._failed(
                name, f"not ready: no listener of its own on {self.hub_socket}", SOCKET_PROBE_SEC
            )
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
        self._again(name, SOCKET_PROBE_SEC)

    # -- protocol: hello + ping, ready on the pong ----------------------------

    def _talk(self, name: str, sock: socket.socket) -> None:
        stamp = int(self.loop.now() * 1000)
        data = hubcheck.request(stamp)
        try:
            sent = sock.send(data)
        except OSError:
            sent = -1
        if sent != len(data):  # 200 bytes into a fresh connection: only a broken peer
            sock.close()
            self._no_pong(name, "did not take the hello + ping")
            return
        self._talks[name] = _Talk(sock, hubcheck.Replies(stamp))
        self.loop.add_reader(sock.fileno(), lambda: self._on_reply(name))
        self._probes[name] = self.loop.call_later(
            PROTOCOL_REPLY_SEC,
            lambda: self._no_pong(
                name, f"sent no pong within {PROTOCOL_REPLY_SEC:g} s to hello + ping"
            ),
        )

    def _on_reply(self, name: str) -> None:
        talk = self._talks.get(name)
        if talk is None:
            return
        data = received(talk.sock, 4096)
        if data is None:
            return
        if talk.replies.feed(data):
            self._passed(name)
        elif not data:
            self._no_pong(name, "closed the connection without a pong to hello + ping")

    def _no_pong(self, name: str, what: str) -> None:
        talk = self._talks.get(name)
        refused = talk.replies.error if talk is not None else None
        self._end_talk(name)
        timer = self._probes.pop(name, None)
        if timer is not None:
            timer.cancel()
        if refused is not None:
            why = f"not ready: the hub on {self.hub_socket} {refused}"
        else:
            why = (
                f"not ready: the hub accepts connections on {self.hub_socket} but {what}; "
                "it is not serving bots (the real hub does this while it cannot reach "
                "Twitch EventSub)"
            )
        self._failed(name, why, PROTOCOL_RETRY_SEC)

    def _end_talk(self, name: str) -> None:
        talk = self._talks.pop(name, None)
        if talk is not None:
            self.loop.remove_reader(talk.sock.fileno())
            talk.sock.close()

    # -- db: hub_state.ws_state = 'connected' ----------------------------------

    def _check_db(self, name: str) -> None:
        import sqlite3  # lazy: only hub.ready: db pays for it (tests/import_budget.py)

        db = self._hub_db or self.pids_dir.parent / "kissbot.db"
        try:
            state = read_ws_state(db)
        except FileNotFoundError:
            why = f"not ready: hub.ready is db, but the token DB {db} does not exist"
        except OSError as e:
            why = f"not ready: hub.ready is db, but the token DB {db} {e.strerror}"
        except sqlite3.Error as e:
            code = getattr(e, "sqlite_errorcode", 0) & 0xFF
            if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                why = ""  # the hub is writing it: look again shortly
            else:
                why = f"not ready: hub.ready is db, but the token DB {db} cannot be read ({e})"
        else:
            if state == "connected":
                self._passed(name)
                return
            shown = "no ws_state row" if state is None else f"ws_state {state!r}"
            why = (
                f"not ready: its socket accepts, but hub_state has {shown} in {db}, not "
                "'connected': the hub is not connected to Twitch EventSub"
            )
        if not why:  # busy: no verdict this time
            if name in self._live:
                self._next_check(name)
            else:
                self._again(name, DB_PROBE_SEC)
            return
        self._failed(name, why, DB_PROBE_SEC)

    def close(self) -> None:
        for name in list(self._probes):
            self.forget(name)
        for name in list(self._talks):
            self._end_talk(name)
        self.loop.watches.cancel(self._watch)


def read_ws_state(db: Path, busy_timeout: float = 0.05) -> str | None:
    """``hub_state.ws_state`` as the hub last wrote it (``connecting``, ``connected``,
    ...), or None when the table or the row is not there: one short read-only query
    (the caller polls; the loop must not wait on the hub's lock). Raises OSError
    when the file cannot be opened, sqlite3.Error when it cannot be read."""
    from contextlib import closing

    from ..runtime.sqlite_ro import connect_read_only, header

    with closing(connect_read_only(db, header(db), busy_timeout)) as conn:
        found = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='hub_state'"
        ).fetchone()[0]
        if not found:
            return None
        row = conn.execute("SELECT value FROM hub_state WHERE key = 'ws_state'").fetchone()
    return None if row is None or row[0] is None else str(row[0])
