"""KissBot's file interfaces in ``pids/``: the command listener and the broadcast relay.

KissBot's shell scripts and chat commands drive the supervisor through files
(the facts are in the interface notes, "File-based control"):

- ``pids/supervisor.cmd`` holds one command (``start CH``, ``stop CH``,
  ``restart CH``, ``status``); the reply goes, without a trailing newline, to
  ``pids/supervisor.result``. Clients wait up to 30 s for it.
- ``pids/supervisor.broadcast`` holds ``UNIX_TS|SOURCE_CHANNEL|MESSAGE`` lines;
  each is relayed as ``SOURCE_CHANNEL|MESSAGE`` to ``pids/CH.broadcast_in`` of
  every running bot but the source.

The parsing and the reply strings are pure functions (tested without I/O);
:class:`FileInterfaces` does the I/O. It is woken by inotify on ``pids/``
only (no polling, no timer), and reads a file only once its writer has closed
it (``IN_CLOSE_WRITE``) or renamed it into place (``IN_MOVED_TO``), so a file
still being written is never read early. Commands go through the same
request path as ``kissbotctl`` (:meth:`..daemon.requests.Requests.handle`),
so they wait for their outcome the same way.

Why one module of 600 lines: the command listener and the broadcast relay
share one watch of ``pids/``, KissBot's file rules (no symlinks, regular
files only, whole files) and one wake-up; the pure parsing of their lines is
at the top, the I/O in :class:`FileInterfaces`.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..config.load import check_login
from ..config.settings import SettingValueError
from ..core.records import record
from ..protocol import Request
from ..runtime.fs import NotRegularFile, make_dirs, open_regular, read_fd, write_atomically
from ..runtime.inotify import IN_CLOSE_WRITE, IN_DELETE, IN_MODIFY, IN_MOVED_TO, Subscription
from ..runtime.loop import Loop, Timer

# typing is imported for the type checker only (it costs the daemon 0.4 MiB).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .. import core
    from ..runtime.inotify import Events
    from ..runtime.log import Log

    Reply = Callable[[dict[str, Any]], None]
    Say = Callable[..., None]
    # (channel, phase, pid) of every bot, in config order.
    BotStates = Callable[[], list[tuple[str, str, int | None]]]

IN_MOVED_FROM = 0x00000040  # not (yet) in inotify.py: a bot may move its inbox away to read it

CMD_FILE = "supervisor.cmd"
RESULT_FILE = "supervisor.result"
BROADCAST_FILE = "supervisor.broadcast"
INBOX_SUFFIX = ".broadcast_in"

# KissBot's clients give up after this long; a command file older than that at
# start-up has nobody waiting for it any more.
CLIENT_WAIT_SEC = 30.0
MAX_COMMAND_BYTES = 4096
MAX_BROADCAST_BYTES = 64 * 1024
# Twitch allows 500 characters per chat message; this leaves room for prefixes.
MAX_MESSAGE_CHARS = 2000
# Broadcasts held for one bot that has not consumed its inbox yet; the oldest
# goes first beyond that (a bot that never reads must not grow the daemon).
MAX_QUEUED = 32
# The replies and inboxes are read by KissBot's scripts and bots, which may run
# as another user than the supervisor (systemd.user); the unit's UMask=0077
# would make them 0600. They hold chat text and PIDs, nothing secret.
FILE_MODE = 0o644

UNKNOWN_COMMAND = "ERROR: Unknown command"
VERBS = ("start", "stop", "restart")
RUNNING = "RUNNING"
STOPPED = "STOPPED"
_TS_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")

# --- pure: commands ------------------------------------------------------------


def parse_command(data: bytes) -> tuple[str, str] | None:
    """``("status", "")`` or ``(verb, channel as written)``; None is an unknown command.

    Whitespace around and between the words is free (``echo`` adds a newline);
    anything else (empty, extra words, an unknown verb, not UTF-8) is unknown.
    """
    try:
        words = data.decode("utf-8").split()
    except UnicodeDecodeError:
        return None
    if words == ["status"]:
        return ("status", "")
    if len(words) == 2 and words[0] in VERBS:
        return (words[0], words[1])
    return None


def channel_of(written: str, channels: Iterable[str]) -> str | None:
    """The configured channel ``written`` names (logins are case-insensitive), or None.

    ``hub`` and ``all`` are no channels here: the file interface drives bots
    only, like the old supervisor's.
    """
    try:
        login = check_login(written)
    except SettingValueError:
        return None
    return login if login in channels else None


def not_found(written: str) -> str:
    return f"ERROR: Channel '{written}' not found"


def reply_for(verb: str, name: str, response: Mapping[str, Any]) -> str:
    """The old supervisor's reply for one channel's ``handle_request`` response.

    ``response`` is ``{"ok": True, "results": [entry, ...]}`` with the entries
    of :func:`commands.result` (``name``, ``ok``, ``result``, ``pid``, ...),
    or ``{"ok": False, "error": ...}`` when the name was refused.
    """
    entry = next((r for r in response.get("results") or () if r.get("name") == name), None)
    if not response.get("ok") or entry is None or entry.get("result") == "removed":
        return not_found(name)  # refused, or removed from the config by a reload meanwhile
    result, pid = entry.get("result"), entry.get("pid")
    if verb == "start":
        if result == "started" and pid is not None:
            return f"SUCCESS: {name} started (PID {pid})"
        if result == "already running" and pid is not None:
            return f"ERROR: {name} already running (PID {pid})"
        return f"ERROR: {name} failed to start"  # failed, parked, blocked, or still starting
    if verb == "stop":
        if result == "stopped" and pid is not None:
            return f"SUCCESS: {name} stopped (was PID {pid})"
        if result == "not running":
            return f"ERROR: {name} not running"
        return f"ERROR: {name} failed to stop"  # still there when the wait ran out
    if result == "restarted" and pid is not None:
        return f"SUCCESS: {name} restarted (PID {pid})"
    return f"ERROR: {name} failed to restart"


def state_word(phase: str, pid: int | None) -> str:
    """RUNNING or STOPPED, the only two words the old status had.

    The old supervisor said RUNNING while a bot's process was alive, so
    RUNNING is a live process that is wanted up: ``starting`` (spawned, not
    ready yet) and ``running``. Everything else is STOPPED: ``stopped``,
    ``backoff`` and ``failed`` have no process, and a ``stopping`` one is on
    its way out. ``kissbotctl status`` tells these apart.
    """
    return RUNNING if pid is not None and phase in ("starting", "running") else STOPPED


def status_reply(bots: Iterable[tuple[str, str, int | None]]) -> str:
    """``SUCCESS: ch1:RUNNING:1234 | ch2:STOPPED:N/A`` for (channel, phase, pid) in order."""
    parts = []
    for name, phase, pid in bots:
        word = state_word(phase, pid)
        parts.append(f"{name}:{word}:{pid if word == RUNNING else 'N/A'}")
    return "SUCCESS: " + " | ".join(parts)


# --- pure: broadcasts --------------------------------------------------------


@record
class Broadcast:
    sent_at: float  # UNIX_TS as written by KissBot's chat command
    source: str  # the source channel as written
    message: str


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_broadcasts(data: bytes) -> tuple[list[Broadcast], list[str]]:
    """The broadcasts in a ``supervisor.broadcast`` file, and one sentence per bad line.

    One ``UNIX_TS|SOURCE_CHANNEL|MESSAGE`` per line (a writer that appends
    may leave several); the message may contain ``|``. Empty lines are skipped.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], ["the file is not UTF-8 text"]
    good: list[Broadcast] = []
    bad: list[str] = []
    expected = "expected UNIX_TS|SOURCE_CHANNEL|MESSAGE"
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("|", 2)
        where = f"line {number} {_shown(line)}"
        if len(parts) != 3:
            bad.append(f"{where} has {len(parts) - 1} '|' ({expected})")
            continue
        ts, source, message = parts
        if not _TS_RE.fullmatch(ts.strip()):
            bad.append(f"{where}: UNIX_TS {_shown(ts)} is not a Unix time ({expected})")
            continue
        try:
            check_login(source.strip())
        except SettingValueError as e:
            bad.append(f"{where}: SOURCE_CHANNEL {_shown(source)} {e.rule} ({expected})")
            continue
        if not message.strip():
            bad.append(f"{where}: the MESSAGE is empty ({expected})")
            continue
        if len(message) > MAX_MESSAGE_CHARS:
            bad.append(f"{where}: the MESSAGE is over {MAX_MESSAGE_CHARS} characters")
            continue
        good.append(Broadcast(float(ts), source.strip(), message))
    return good, bad


def inbox_line(broadcast: Broadcast) -> str:
    """What a bot finds in ``pids/CH.broadcast_in``: ``SOURCE_CHANNEL|MESSAGE`` and a newline."""
    return f"{broadcast.source}|{broadcast.message}\n"


def relay_targets(source: str, bots: Iterable[tuple[str, str, int | None]]) -> list[str]:
    """Every bot that status shows RUNNING, except the source (compared as a login)."""
    src = source.lower()
    return [name for name, phase, pid in bots if state_word(phase, pid) == RUNNING and name != src]


def bot_states(
    channels: Iterable[str], procs: Mapping[str, core.Proc]
) -> list[tuple[str, str, int | None]]:
    """(channel, phase, pid) of the configured bots, in config order (the hub is no bot)."""
    return [(n, str(procs[n].phase), procs[n].pid) for n in channels if n in procs]


# --- I/O ------------------------------------------------------------------------


class FileInterfaces:
    """The command listener and the broadcast relay, on one inotify watch of ``pids/``.

    Commands run one at a time, in the order they are written: while one
    waits for its outcome (a start waits for the bot to be ready), a newly
    written ``supervisor.cmd`` stays where it is and is taken once the reply
    is written. (A second client writing before the first file is taken
    replaces it: one file holds one command, as with the old supervisor.)
    """

    def __init__(
        self,
        loop: Loop,
        pids_dir: Path,
        bots: BotStates,
        request: Callable[[Request, Reply], None],
        log: Log,
    ) -> None:
        self.loop = loop
        self.pids_dir = pids_dir
        self.workdir = pids_dir.parent  # the bots' user's: files there follow runtime/fs.py
        self._bots = bots
        self._request = request
        self._log = log
        self.commands_on = False
        self.relay_on = False
        self._watch: Subscription | None = None
        self._started = False
        self._closed = False
        self._busy = False  # a command is waiting for its outcome
        # The last event on supervisor.cmd was a writer's close or a rename into
        # place: a whole command is there to take.
        self._cmd_complete = False
        self._pickup: Timer | None = None
        self._queued: dict[str, deque[str]] = {}  # channel -> lines its inbox could not take yet

    # -- life cycle ----------------------------------------------------------

    def configure(self, commands: bool, relay: bool) -> None:
        """Apply ``file_commands``/``broadcast_relay`` (at start and at every reload).

        Both off: no inotify watch at all. One off: the one watch of ``pids/``
        serves the other, and the switched-off file is left alone. Switched
        on by a reload: a file already there is handled as at start-up.
        """
        was_commands, was_relay = self.commands_on, self.relay_on
        if (commands, relay) == (was_commands, was_relay):
            return
        self._unwatch()
        self.commands_on, self.relay_on = commands, relay
        if not relay and self._queued:
            held = sum(len(q) for q in self._queued.values())
            self._log.warning(
                "supervisor.broadcast", f"relay switched off: {held} held broadcasts dropped"
            )
            self._queued.clear()
        if not commands:
            self._cmd_complete = False
        if commands or relay:
            mask = IN_CLOSE_WRITE | IN_MOVED_TO
            if commands:
                mask |= IN_MODIFY | IN_DELETE | IN_MOVED_FROM
            if relay:
                mask |= IN_DELETE | IN_MOVED_FROM  # a bot consumed its inbox
            try:
                make_dirs(self.pids_dir, self.workdir)
                self._watch = self.loop.watches.subscribe(self.pids_dir, mask, self._on_files)
            except OSError as e:
                self._log.error(
                    "supervisor",
                    f"cannot watch {self.pids_dir} for KissBot's command and broadcast files: "
                    f"{e.strerror or e}; they are not answered",
                )
                return
        if self._started:
            # The watch is new: what was switched on now is looked at as at
            # start-up; what stayed on, as after a missed event.
            self._look(
                commands=commands and not was_commands, relay=relay and not was_relay, start=True
            )
            self._look(commands=commands and was_commands, relay=relay and was_relay, start=False)

    def start(self) -> None:
        """Handle what was written while no supervisor listened (after the fleet's first batch)."""
        self._started = True
        self._look(commands=self.commands_on, relay=self.relay_on, start=True)

    def close(self) -> None:
        self._closed = True
        self._unwatch()
        if self._pickup is not None:
            self._pickup.cancel()
            self._pickup = None

    def _unwatch(self) -> None:
        if self._watch is not None:
            self.loop.watches.cancel(self._watch)
            self._watch = None

    # -- waking up -------------------------------------------------------------

    def _on_files(self, events: Events) -> None:
        broadcast = False
        consumed: set[str] = set()
        for name, mask in events:
            if name is None:  # queue overflow: look at everything
                self._look(commands=self.commands_on, relay=self.relay_on, start=False)
                continue
            if name == CMD_FILE:
                if mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                    self._cmd_complete = True
                elif mask & (IN_MODIFY | IN_DELETE | IN_MOVED_FROM):
                    # Written again (wait for that writer's close), or gone.
                    self._cmd_complete = False
            elif name == BROADCAST_FILE:
                broadcast = broadcast or bool(mask & (IN_CLOSE_WRITE | IN_MOVED_TO))
            elif name.endswith(INBOX_SUFFIX) and mask & (
                IN_DELETE | IN_MOVED_FROM | IN_CLOSE_WRITE
            ):
                consumed.add(name[: -len(INBOX_SUFFIX)])
        if self.relay_on:
            if broadcast:
                self._relay()
            for channel in consumed:
                self._flush(channel)
        if self.commands_on and self._cmd_complete and not self._busy:
            self._take_command()

    def _look(self, *, commands: bool, relay: bool, start: bool) -> None:
        """Files already there: at start-up, after a switch-on, after an inotify overflow."""
        if commands:
            path = self.pids_dir / CMD_FILE
            try:
                age = time.time() - path.stat().st_mtime
            except OSError:
                age = None
            # A fresh command file may have a client still waiting for it: handle
            # it (its writer is done: a client writes in one go). An old one was
            # written while no supervisor listened and its client gave up long
            # ago; running it now (a stop, hours later) would surprise everyone.
            if age is not None and start and age > CLIENT_WAIT_SEC:
                self._remove_stale(path, age)
            elif age is not None:
                self._cmd_complete = True
        if relay:
            path = self.pids_dir / BROADCAST_FILE
            try:
                age = time.time() - path.stat().st_mtime
            except OSError:
                age = None
            if age is not None and start and age > CLIENT_WAIT_SEC:
                self._remove_stale(path, age)  # chat moved on: out of context now
            elif age is not None:
                self._relay()
            for channel in list(self._queued):
                self._flush(channel)
        if self._cmd_complete and not self._busy:
            self._take_command()

    def _remove_stale(self, path: Path, age: float) -> None:
        try:
            path.unlink()
        except OSError as e:
            self._log.warning("supervisor", f"cannot remove the stale {path}: {e.strerror}")
            return
        self._log.warning(
            "supervisor",
            f"removed {path.name}, written {age:.0f} s ago while no supervisor listened "
            f"(its client gave up after {CLIENT_WAIT_SEC:.0f} s)",
        )

    def _consume(self, path: Path, limit: int) -> bytes | None:
        """Read a regular file (at most ``limit + 1`` bytes) and delete it; None if absent."""
        try:
            fd = open_regular(path, base=self.workdir)  # runtime/fs.py's rule
        except FileNotFoundError:
            return None
        except NotRegularFile as e:
            self._log.warning("supervisor", f"{path} {e.strerror}; left alone")
            return None
        except OSError as e:
            self._log.warning("supervisor", f"cannot read {path}: {e.strerror}")
            return None
        try:
            st = os.fstat(fd)
            data = read_fd(fd, limit)
        except OSError as e:
            self._log.warning("supervisor", f"cannot read {path}: {e.strerror}")
            return None
        finally:
            os.close(fd)
        try:
            # Only the file read: a new one renamed into place meanwhile stays.
            if os.stat(path, follow_symlinks=False).st_ino == st.st_ino:
                path.unlink()
        except OSError:
            pass
        return data

    # -- commands --------------------------------------------------------------

    def _take_command(self) -> None:
        self._cmd_complete = False
        data = self._consume(self.pids_dir / CMD_FILE, MAX_COMMAND_BYTES)
        if data is None:
            return
        shown = _shown(data.decode("utf-8", "replace").strip(), 60)
        parsed = None if len(data) > MAX_COMMAND_BYTES else parse_command(data)
        if parsed is None:
            self._answer(shown, UNKNOWN_COMMAND)
            return
        verb, written = parsed
        bots = self._bots()
        if verb == "status":
            self._answer(shown, status_reply(bots))
            return
        name = channel_of(written, [b[0] for b in bots])
        if name is None:
            self._answer(shown, not_found(written))
            return
        self._busy = True

        def done(response: dict[str, Any]) -> None:
            self._busy = False
            if self._closed:
                return
            self._answer(shown, reply_for(verb, name, response))
            if self._cmd_complete and self._pickup is None:
                # The next command waited its turn. Taken from the loop, not from
                # here: this reply may come from inside handle_request itself.
                self._pickup = self.loop.call_at(self.loop.now(), self._take_waiting)

        self._request(Request(verb, (name,)), done)

    def _take_waiting(self) -> None:
        self._pickup = None
        if self.commands_on and self._cmd_complete and not self._busy:
            self._take_command()

    def _answer(self, shown: str, reply: str) -> None:
        path = self.pids_dir / RESULT_FILE
        try:
            write_atomically(path, reply, FILE_MODE, base=self.workdir)  # no newline, as before
        except OSError as e:
            self._log.error("supervisor.cmd", f"{shown}: cannot write {path}: {e.strerror}")
            return
        self._log.info("supervisor.cmd", f"{shown} -> {reply}")

    # -- broadcasts ------------------------------------------------------------

    def _relay(self) -> None:
        path = self.pids_dir / BROADCAST_FILE
        data = self._consume(path, MAX_BROADCAST_BYTES)
        if data is None:
            return
        if len(data) > MAX_BROADCAST_BYTES:
            self._log.warning(
                "supervisor.broadcast",
                f"dropped {path.name}: over {MAX_BROADCAST_BYTES} bytes "
                "(expected UNIX_TS|SOURCE_CHANNEL|MESSAGE lines)",
            )
            return
        broadcasts, problems = parse_broadcasts(data)
        for problem in problems:
            self._log.warning("supervisor.broadcast", f"dropped {path.name} {problem}")
        bots = self._bots() if broadcasts else []
        for broadcast in broadcasts:
            targets = relay_targets(broadcast.source, bots)
            for channel in targets:
                self._deliver(channel, inbox_line(broadcast))
            self._log.info(
                "supervisor.broadcast",
                f"from {broadcast.source}: relayed to {len(targets)} bots "
                f"({', '.join(targets) or 'none running'})",
            )

    def _deliver(self, channel: str, line: str) -> None:
        """Queue a line for a bot's inbox and write it as soon as the inbox is free.

        One broadcast per inbox file: the bots read the whole file and delete
        it, so overwriting an unread inbox would lose its message, and appending
        would put two in a file whose reader may expect one (and could land
        between its read and its delete, and be lost all the same). The next
        line waits here until the bot has consumed the file (inotify).
        """
        queue = self._queued.setdefault(channel, deque())
        if len(queue) >= MAX_QUEUED:
            dropped = queue.popleft()
            self._log.warning(
                "supervisor.broadcast",
                f"{channel} has not read its inbox for {MAX_QUEUED} broadcasts; "
                f"dropped the oldest, {_shown(dropped.rstrip())}",
            )
        queue.append(line)
        self._flush(channel)

    def _flush(self, channel: str) -> None:
        queue = self._queued.get(channel)
        if not queue or channel not in (b[0] for b in self._bots()):
            self._queued.pop(channel, None)  # nothing held, or removed from the config
            return
        path = self.pids_dir / f"{channel}{INBOX_SUFFIX}"
        try:
            # Absent, or emptied by a reader that truncates rather than deletes.
            if path.lstat().st_size > 0:
                return
        except FileNotFoundError:
            pass
        except OSError as e:
            self._log.warning("supervisor.broadcast", f"cannot look at {path}: {e.strerror}")
            return
        line = queue.popleft()
        if not queue:
            del self._queued[channel]
        try:
            write_atomically(path, line, FILE_MODE, base=self.workdir)
        except OSError as e:
            self._log.error(
                "supervisor.broadcast",
                f"cannot write {path}: {e.strerror}; dropped {_shown(line.rstrip())}",
            )
