"""``kissbotctl logs``: one process's output, from its journal or from its log files.

Two sources, one interface (:meth:`tail` for the last lines, :meth:`follow` for
what comes after them):

* :class:`JournalLog`, the systemd backend: the unit's journal through
  systemd-python, with the matches ``journalctl -u UNIT`` uses (the unit's
  own output, systemd's messages about it, its core dumps), each entry printed
  as ``Mon DD HH:MM:SS MESSAGE`` (journalctl's short format without host and
  identifier). ``directory`` reads journal files from a directory instead of
  the system's journal (``journalctl -D``).
* :class:`FileLog`, the native backend: ``LOGS_DIR/NAME.log`` and its rotated
  copies ``NAME.log.1``, ``.2``, ... (see :mod:`.logfiles`), printed as they
  are (``YYYY-MM-DDTHH:MM:SS.mmm text``). Following reopens the file when
  rotation replaces it, after the last lines of the old one.

Which source applies is decided by :func:`source_from_status` (from the
supervisor's STATUS object) or by the caller (``--workdir``, ``--journal-dir``,
or PID 1 being systemd). Errors raise :class:`LogError` with one sentence.

:func:`last_lines` reads what ``kissbotctl status NAME`` shows of a log, saying
why instead when it cannot. Loaded only by ``kissbotctl logs`` and ``status
NAME``: systemd-python and ctypes (inotify) are imported only when used.
"""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

from ..kissbot.names import HUB, login_of, process_name
from ..runtime.fs import open_regular

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from typing import Any

    Emit = Callable[[Sequence[str]], None]
    Match = Callable[[str], bool]  # --grep: whether a line's text is shown
    Line = tuple[float, str]  # a line and its Unix time

__all__ = [
    "DEFAULT_LOGS_DIR",
    "FileLog",
    "JournalLog",
    "LogError",
    "LogSource",
    "check_name",
    "file_line_time",
    "format_entry",
    "last_lines",
    "may_read_system_journal",
    "source_from_status",
]

DEFAULT_LOGS_DIR = "logs/supervisor"  # the ``logs.dir`` setting's default
COREDUMP_MESSAGE_ID = "fc2e22bc6ee647b6b90729ab34a250b1"
BLOCK = 64 * 1024
MAX_BACKUPS = 1000  # LogFile keeps logs.backups copies; never scan further than this
POLL_SEC = 1.0  # the follower looks anyway this often (missed event, truncation)
_STAMP_LEN = len("2026-11-24T01:02:03.456")
NO_INOTIFY_POLL_SEC = 0.25


class LogError(Exception):
    """The log cannot be shown; ``message`` is one sentence, ``code`` the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def check_name(name: str) -> str:
    """``name`` lowercased if it is ``hub`` or a Twitch login, else :class:`LogError` (code 2).

    Checked before the name goes into a path or a unit name.
    """
    if process_name(name) == HUB:
        return HUB
    login = login_of(name)
    if login is None:
        raise LogError(f"{name!r} is neither 'hub' nor a Twitch login (4-25 of a-z, 0-9, _)", 2)
    return login


class LogSource:
    """Where a process's output is: its unit's journal, or native log files.

    ``confirmed``: the supervisor knows the process, so an empty log is just
    empty; otherwise an empty log means an unknown name.
    """

    __slots__ = ("confirmed", "journal_dir", "kind", "logs_dir", "name")

    def __init__(
        self,
        kind: str,
        name: str,
        *,
        logs_dir: Path | None = None,
        journal_dir: str | None = None,
        confirmed: bool = False,
    ) -> None:
        if kind not in ("journal", "files"):
            raise ValueError(f"{kind!r} is not a log source (journal or files)")
        if kind == "files" and logs_dir is None:
            raise ValueError("a files source needs logs_dir")
        self.kind = kind
        self.name = name
        self.logs_dir = logs_dir
        self.journal_dir = journal_dir
        self.confirmed = confirmed

    def __repr__(self) -> str:
        where = self.logs_dir if self.kind == "files" else (self.journal_dir or "system journal")
        return f"LogSource({self.kind!r}, {self.name!r}, {where}, confirmed={self.confirmed})"


def _known_names(status: Mapping[str, Any]) -> list[str]:
    names = [HUB] if isinstance(status.get("hub"), dict) else []
    for bot in status.get("bots") or []:
        if isinstance(bot, dict):
            channel = bot.get("channel") or bot.get("name")
            if isinstance(channel, str):
                names.append(channel)
    return names


def source_from_status(status: Mapping[str, Any], name: str) -> LogSource:
    """The source of ``name``'s log from the supervisor's STATUS object.

    Raises :class:`LogError` when the supervisor does not run such a process.
    The native log directory is ``supervisor.logs_dir`` when the status has it,
    else ``logs.dir``'s default under ``supervisor.workdir``.
    """
    known = _known_names(status)
    if name not in known:
        listed = ", ".join(known) or "none"
        if name == HUB:
            raise LogError(f"this supervisor runs no hub (known: {listed})")
        raise LogError(f"unknown process {name!r} (known: {listed})")
    if status.get("backend") == "systemd":
        return LogSource("journal", name, confirmed=True)
    sup = status.get("supervisor")
    sup = sup if isinstance(sup, dict) else {}
    workdir = sup.get("workdir")
    if not isinstance(workdir, str) or not workdir:
        raise LogError("the supervisor's status has no workdir; pass --workdir DIR")
    logs_dir = sup.get("logs_dir")
    logs = Path(logs_dir) if isinstance(logs_dir, str) and logs_dir else Path(DEFAULT_LOGS_DIR)
    return LogSource("files", name, logs_dir=Path(workdir) / logs, confirmed=True)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def last_lines(
    status: Mapping[str, Any], name: str, count: int | None
) -> tuple[str, list[str] | None, str | None]:
    """Where ``name``'s log is, its last ``count`` lines (None if they cannot be read),
    and why not. A log that cannot be read is said in the detail, not an error: the
    rest of the detail is worth having."""
    from ..kissbot.names import unit_of

    try:
        source = source_from_status(status, name)
    except LogError as exc:
        return "-", None, exc.message
    if source.kind == "files":
        assert source.logs_dir is not None
        files = FileLog(source.logs_dir, name)
        log: FileLog | JournalLog = files
        where = str(files.path)
    else:
        unit = unit_of(name)
        where = f"the journal of {unit} (journalctl -u {unit})"
        if not may_read_system_journal():
            return where, None, "the system journal is for root and the systemd-journal group"
        try:
            log = JournalLog(unit)
        except ImportError:
            return where, None, "systemd-python is not installed (python3-systemd)"
        except LogError as exc:
            return where, None, exc.message
    try:
        return where, log.tail(count), None
    except LogError as exc:
        return where, None, exc.message
    finally:
        log.close()


def may_read_system_journal() -> bool:
    """Root, or a member of a group journald lets read every unit's entries."""
    if os.geteuid() == 0:
        return True
    import grp

    allowed = set()
    for group in ("systemd-journal", "adm", "wheel"):
        try:
            allowed.add(grp.getgrnam(group).gr_gid)
        except KeyError:
            continue
    return bool(allowed & {os.getegid(), *os.getgroups()})


# --- native log files ------------------------------------------------------------------


def _tail_fd(fd: int, end: int, count: int | None) -> tuple[list[bytes], bytes]:
    """The last ``count`` (None: all) complete lines before offset ``end``, and what
    follows the last newline (an unfinished line)."""
    chunks: list[bytes] = []
    pos = end
    newlines = 0
    while pos > 0 and (count is None or newlines <= count):
        size = min(BLOCK, pos)
        pos -= size
        chunk = os.pread(fd, size, pos)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    *lines, partial = b"".join(reversed(chunks)).split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first piece starts mid-line
    if count is not None:
        lines = lines[-count:] if count > 0 else []
    return lines, partial


def _open(path: Path) -> int | None:
    # The bots' user writes logs/: an operator (or root) running kissbotctl must
    # not be shown a file a bot linked there, nor hang on a FIFO it made there.
    try:
        return open_regular(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LogError(f"cannot read {path}: {exc.strerror}") from None


def file_line_time(line: str) -> float | None:
    """The Unix time of a log file line's stamp (``2026-11-24T01:02:03.456 ...``, local
    time, as LogFile writes it); None for a line without one."""
    stamp = line[:_STAMP_LEN]
    if len(stamp) < _STAMP_LEN or stamp[10] != "T" or stamp[19] != ".":
        return None
    try:
        whole = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
        return whole + int(stamp[20:23]) / 1000
    except (ValueError, OverflowError):
        return None


def _timed(lines: Sequence[str]) -> list[Line]:
    """Each line with its time; one without a stamp takes the time of the one before
    (0 at the start), so that a file's order is kept in any merge."""
    out: list[Line] = []
    last = 0.0
    for line in lines:
        when = file_line_time(line)
        last = last if when is None else when
        out.append((last, line))
    return out


def _text(line: str) -> str:
    """A file line without its time stamp: what --grep looks at."""
    return line[_STAMP_LEN + 1 :] if file_line_time(line) is not None else line


def _last(lines: list[Line], count: int | None) -> list[Line]:
    if count is None:
        return lines
    return lines[max(0, len(lines) - count) :]


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class FileLog:
    """The native backend's log of one process: ``NAME.log`` and its rotated copies."""

    def __init__(self, logs_dir: Path, name: str) -> None:
        self.logs_dir = logs_dir
        self.name = name
        self.path = logs_dir / f"{name}.log"
        # The current file as far as tail() read it: where follow() goes on.
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._pos = 0
        self._partial = b""

    def exists(self) -> bool:
        """Whether any of its files is there (the current one or a rotated copy)."""
        return self.path.exists() or self._backup(1).exists()

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def tail(self, count: int | None, newer_than: float | None = None) -> list[str]:
        """The last ``count`` lines (None: all), across the rotated copies if needed;
        with ``newer_than`` (Unix time), not from a rotated copy last written before it."""
        for _attempt in range(5):
            lines = self._try_tail(count, newer_than)
            if lines is not None:
                return [_decode(line) for line in lines]
        raise LogError(f"{self.path} is being rotated too fast to be read")

    def timed_tail(
        self, count: int | None, since: float | None = None, match: Match | None = None
    ) -> list[Line]:
        """The last ``count`` lines (None: all) written from ``since`` on whose text
        (the line without its time stamp) ``match`` accepts, with their times."""
        if since is None and match is None:
            return _timed(self.tail(count))
        lines = [
            (when, line)
            for when, line in _timed(self.tail(None, since))
            if (since is None or when >= since) and (match is None or match(_text(line)))
        ]
        return _last(lines, count)

    def timed_poll(self, match: Match | None = None) -> list[Line]:
        """:meth:`poll`, with the lines' times, only those ``match`` accepts."""
        return [(t, x) for t, x in _timed(self.poll()) if match is None or match(_text(x))]

    def _try_tail(self, count: int | None, newer_than: float | None = None) -> list[bytes] | None:
        """None when a rotation happened under our feet (read again)."""
        self.close()
        fd = _open(self.path)
        lines: list[bytes] = []
        if fd is not None:
            st = os.fstat(fd)
            self._fd, self._ident, self._pos = fd, _identity(st), st.st_size
            lines, self._partial = _tail_fd(fd, st.st_size, count)
        index = 1
        while (count is None or len(lines) < count) and index <= MAX_BACKUPS:
            backup = self._backup(index)
            bfd = _open(backup)
            if bfd is None:
                break
            try:
                st = os.fstat(bfd)
                if self._ident is not None and _identity(st) == self._ident:
                    return None  # the file we hold was just rotated to .1
                if newer_than is not None and st.st_mtime < newer_than:
                    break  # its every line is older, and those of the copies after it
                need = None if count is None else count - len(lines)
                older, unfinished = _tail_fd(bfd, st.st_size, need)
            finally:
                os.close(bfd)
            if unfinished:  # a rotated file is finished: so is its last line
                older.append(unfinished)
            if need is not None:
                older = older[-need:]
            lines = older + lines
            index += 1
        if count is not None:
            lines = lines[-count:] if count > 0 else []
        return lines

    def poll(self) -> list[str]:
        """Lines written since the last call (or since :meth:`tail`), following rotation."""
        lines = self._drain()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return [_decode(line) for line in lines]  # rotated, not yet recreated
        except OSError as exc:
            raise LogError(f"cannot read {self.path}: {exc.strerror}") from None
        if self._fd is None or _identity(st) != self._ident:
            # Replaced (rotated) or created: the old file's last words, then the new one.
            lines += self._drain()
            if self._partial:
                lines.append(self._partial)
            self.close()
            fd = _open(self.path)
            if fd is not None:
                self._fd, self._ident, self._pos = fd, _identity(os.fstat(fd)), 0
                lines += self._drain()
        elif st.st_size < self._pos:  # truncated in place
            self._pos, self._partial = 0, b""
            lines += self._drain()
        return [_decode(line) for line in lines]

    def _drain(self) -> list[bytes]:
        if self._fd is None:
            return []
        chunks = []
        while True:
            data = os.pread(self._fd, BLOCK, self._pos)
            if not data:
                break
            chunks.append(data)
            self._pos += len(data)
        if not chunks:
            return []
        *lines, self._partial = (self._partial + b"".join(chunks)).split(b"\n")
        return lines

    def follow(self, emit: Emit) -> None:
        """Print new lines as they come, for ever (inotify on the directory, or polling)."""
        with _DirectoryWaker(self.logs_dir) as waker:
            while True:
                lines = self.poll()
                if lines:
                    emit(lines)
                waker.wait()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._ident, self._pos, self._partial = None, None, 0, b""


class _DirectoryWaker:
    """Wakes the follower when something changes in a directory; a timer at worst."""

    def __init__(self, directory: Path) -> None:
        self._ino: Any = None
        self._timeout = NO_INOTIFY_POLL_SEC
        try:
            from ..runtime.inotify import IN_CREATE, IN_DELETE, IN_MODIFY, IN_MOVED_TO, Inotify

            ino = Inotify()
        except OSError:
            return  # out of inotify instances: poll
        try:
            in_moved_from = 0x40
            ino.watch(directory, IN_MODIFY | IN_CREATE | IN_DELETE | IN_MOVED_TO | in_moved_from)
        except OSError:
            ino.close()  # no such directory (yet), or no watches left: poll
            return
        self._ino, self._timeout = ino, POLL_SEC

    def __enter__(self) -> _DirectoryWaker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ino is not None:
            self._ino.close()

    def wait(self) -> None:
        if self._ino is None:
            time.sleep(self._timeout)
            return
        ready, _, _ = select.select([self._ino.fileno()], [], [], self._timeout)
        if ready:
            for _event in self._ino.read():
                pass  # only a wake-up: poll() looks at the file itself


# --- the journal -----------------------------------------------------------------------


def format_entry(entry: Mapping[str, Any]) -> str | None:
    """``Mon DD HH:MM:SS MESSAGE`` for a journal entry; None without a MESSAGE (journalctl
    skips those too). Continuation lines of a multi-line message are indented."""
    message = entry.get("MESSAGE")
    if isinstance(message, list):
        message = message[0] if message else None
    if message is None:
        return None
    if isinstance(message, bytes):
        message = _decode(message)
    usec = entry.get("__REALTIME_TIMESTAMP")
    seconds = usec / 1e6 if isinstance(usec, int) else time.time()
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime(seconds)) + " "
    return stamp + str(message).replace("\n", "\n" + " " * len(stamp))


def _entry_time(entry: Mapping[str, Any]) -> float:
    usec = entry.get("__REALTIME_TIMESTAMP")
    return usec / 1e6 if isinstance(usec, int) else time.time()


def _entry_message(entry: Mapping[str, Any]) -> str:
    """An entry's MESSAGE as text (what --grep looks at)."""
    message = entry.get("MESSAGE")
    if isinstance(message, list):
        message = message[0] if message else ""
    if isinstance(message, bytes):
        return _decode(message)
    return str(message)


class JournalLog:
    """A unit's journal, read as ``journalctl -u UNIT`` reads it."""

    def __init__(self, unit: str, directory: str | None = None) -> None:
        import systemd.journal  # systemd-python: only for this subcommand

        self.unit = unit
        # Timestamps as the raw microseconds (the default converts to datetime).
        converters = {"__REALTIME_TIMESTAMP": int}
        try:
            if directory is None:
                self._reader = systemd.journal.Reader(converters=converters)
            else:
                if not os.path.isdir(directory):
                    raise LogError(f"{directory} is not a directory of journal files")
                self._reader = systemd.journal.Reader(path=directory, converters=converters)
        except OSError as exc:
            where = directory or "the system journal"
            raise LogError(f"cannot open {where}: {exc.strerror or exc}") from None
        self._newest: str | None = None  # cursor of the newest entry tail() read
        self._following = False  # the reader is after the tail, at the new entries
        self._add_unit_matches()

    def _add_unit_matches(self) -> None:
        # journalctl -u (systemd's add_matches_for_unit): the unit's own output; or
        # its core dumps; or PID 1's messages about it; or a root daemon's about it.
        r = self._reader
        r.add_match(_SYSTEMD_UNIT=self.unit)
        r.add_disjunction()
        r.add_match(MESSAGE_ID=COREDUMP_MESSAGE_ID, _UID="0", COREDUMP_UNIT=self.unit)
        r.add_disjunction()
        r.add_match(_PID="1", UNIT=self.unit)
        r.add_disjunction()
        r.add_match(_UID="0", OBJECT_SYSTEMD_UNIT=self.unit)

    def exists(self) -> bool:
        """Whether the journal has any entry of the unit."""
        self._reader.seek_head()
        return bool(self._reader.get_next())

    def tail(self, count: int | None) -> list[str]:
        """The last ``count`` entries (None: all) with a MESSAGE, formatted, oldest first."""
        return [line for _when, line in self.timed_tail(count)]

    def timed_tail(
        self, count: int | None, since: float | None = None, match: Match | None = None
    ) -> list[Line]:
        """The last ``count`` entries (None: all) with a MESSAGE, from ``since`` on, whose
        MESSAGE ``match`` accepts: formatted, with their times, oldest first. Read
        backwards from the newest, so ``since`` ends the reading."""
        self._reader.seek_tail()
        picked: list[Line] = []
        self._newest = None
        while count is None or len(picked) < count:
            entry = self._reader.get_previous()
            if not entry:
                break
            if self._newest is None:  # following goes on after the newest entry read
                self._newest = str(entry["__CURSOR"])
            line = format_entry(entry)
            if line is None:
                continue
            when = _entry_time(entry)
            if since is not None and when < since:
                break
            if match is None or match(_entry_message(entry)):
                picked.append((when, line))
        picked.reverse()
        return picked

    def _entries(self) -> Iterator[Mapping[str, Any]]:
        while entry := self._reader.get_next():
            yield entry

    def _seek_after_tail(self) -> None:
        r = self._reader
        if self._newest is not None:
            r.seek_cursor(self._newest)
            r.get_next()  # onto the newest entry read: the next one is new
        else:
            r.seek_tail()
            r.get_previous()

    def timed_poll(self, match: Match | None = None) -> list[Line]:
        """Entries written since the last call (the first call: since :meth:`timed_tail`)."""
        if not self._following:
            self._seek_after_tail()
            self._following = True
        return [
            (_entry_time(e), line)
            for e in self._entries()
            if (line := format_entry(e)) is not None and (match is None or match(_entry_message(e)))
        ]

    def wait(self, timeout: float) -> None:
        """Until the journal changes (any unit's entries: a wake-up for every reader)."""
        self._reader.wait(timeout)

    def follow(self, emit: Emit) -> None:
        """Print entries after those :meth:`tail` returned as they come, for ever."""
        while True:
            lines = [line for _when, line in self.timed_poll()]
            if lines:
                emit(lines)
            self.wait(POLL_SEC)  # a bounded wait: Ctrl-C is handled between waits

    def close(self) -> None:
        self._reader.close()
