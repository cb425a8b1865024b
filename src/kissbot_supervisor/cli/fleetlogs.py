"""``kissbotctl logs NAME... | all``: several processes' logs as one, by time, each line
prefixed with its process's name; ``--since`` and ``--grep`` for all of them.

The sources are :mod:`.logs`'s (log files natively, the units' journal under
systemd); this module parses the two options, merges the lines by their time
(the files' stamps, the journal's timestamps; a file's own order is kept for
lines of the same time) and follows them all with one wait. One process without
a filter prints exactly what ``kissbotctl logs NAME`` always printed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..kissbot.names import HUB, login_of, process_name, unit_of
from ..protocol import ALL
from .ctl import SINCE_HELP
from .logs import (
    DEFAULT_LOGS_DIR,
    POLL_SEC,
    FileLog,
    JournalLog,
    LogError,
    LogSource,
    _DirectoryWaker,
    check_name,
    may_read_system_journal,
    source_from_status,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from .logs import Emit, Line, Match

    Log = FileLog | JournalLog

__all__ = ["Sources", "grep_matcher", "merge", "open_logs", "parse_since", "prefixer", "show"]

# --since 10m: how many seconds each unit is (s, m, h, d; as journalctl's).
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_RELATIVE = re.compile(r"-?(\d+(?:\.\d+)?)\s*(s|sec|min|m|h|d)( ago)?")
_ABSOLUTE = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
_TIME_OF_DAY = ("%H:%M:%S", "%H:%M")
# A name's colour in the prefix on a terminal, in turn (not the states' green and red).
_NAME_COLORS = ("\x1b[36m", "\x1b[35m", "\x1b[34m", "\x1b[33m", "\x1b[96m", "\x1b[95m")
_RESET = "\x1b[0m"


class Sources:
    """What says where the logs are: the supervisor's STATUS object (None when it
    could not be asked, ``down`` saying why), else ``--workdir``, else the journal
    (``--journal-dir``, or the system's when systemd is PID 1)."""

    def __init__(
        self,
        status: Mapping[str, Any] | None,
        workdir: str | None,
        journal_dir: str | None,
        systemd: bool,
        down: str | None,
    ) -> None:
        self.status = status
        self.workdir = workdir
        self.journal_dir = journal_dir
        self.systemd = systemd
        self.down = down

    def of(self, name: str) -> LogSource:
        if self.journal_dir:
            return LogSource("journal", name, journal_dir=self.journal_dir)
        if self.status is not None:
            return source_from_status(self.status, name)
        if self.workdir:
            return LogSource("files", name, logs_dir=Path(self.workdir) / DEFAULT_LOGS_DIR)
        if self.systemd:
            return LogSource("journal", name)
        raise LogError(f"{self.down}; to read the log files without it, pass --workdir DIR")

    def every_name(self) -> list[str]:
        """``all``: the hub and the bots the supervisor runs; without it, whoever has a
        log file under --workdir."""
        if self.status is not None:
            hub = [HUB] if isinstance(self.status.get("hub"), dict) else []
            bots = [b.get("name") for b in self.status.get("bots") or [] if isinstance(b, dict)]
            return hub + [b for b in bots if isinstance(b, str)]
        if self.workdir and not self.journal_dir:
            logs_dir = Path(self.workdir) / DEFAULT_LOGS_DIR
            found = sorted({f.name.split(".log", 1)[0] for f in logs_dir.glob("*.log*")})
            # The supervisor's own log is no process's (its name is no login).
            return [n for n in found if n == HUB or login_of(n) == n]
        raise LogError(
            "'all' needs the supervisor, to know its processes"
            + (f" ({self.down})" if self.down else "")
            + "; or pass --workdir DIR to read every log file there"
        )


def open_logs(names: Sequence[str], sources: Sources) -> list[tuple[str, Log]]:
    """The log of each name (``all``: of every process), in the order given, each once;
    :class:`.LogError` for a name that has none, or a bad one (code 2)."""
    wanted: list[str] = []
    for given in names:
        batch = sources.every_name() if process_name(given) == ALL else [check_name(given)]
        wanted += [n for n in batch if n not in wanted]
    opened: list[tuple[str, Log]] = []
    try:
        for name in wanted:
            opened.append((name, _open_log(name, sources.of(name), several=len(names) > 1)))
    except BaseException:
        for _name, log in opened:
            log.close()
        raise
    if not opened:
        raise LogError("no process has a log yet")
    return opened


def _open_log(name: str, source: LogSource, *, several: bool) -> Log:
    log: Log
    if source.kind == "files":
        assert source.logs_dir is not None
        log = FileLog(source.logs_dir, name)
        unknown = f"no log of {name!r} in {source.logs_dir} (no {name}.log there)"
        unreadable = False
    else:
        log = JournalLog(unit_of(name), source.journal_dir)
        unknown = f"no journal entries for {unit_of(name)}"
        unreadable = source.journal_dir is None and not may_read_system_journal()
        if unreadable:
            # journald shows a user only their own entries: the unit's are not among
            # them, and an empty answer would look like a silent process.
            unknown = (
                f"no journal entries for {unit_of(name)} that you may read: the system "
                "journal is for root and the groups systemd-journal and adm "
                "(usermod -aG systemd-journal USER, then log in again)"
            )
    # Only the supervisor knows its processes; without it, no log = no such name.
    # With it, a log nobody may read is said, not shown empty.
    if not log.exists() and (not source.confirmed or unreadable):
        log.close()
        raise LogError(unknown)
    return log


def parse_since(text: str, now: float) -> float:
    """The Unix time ``--since`` names (local time); ValueError saying what is understood."""
    words = text.strip().lower()
    relative = _RELATIVE.fullmatch(words)
    if relative:
        return now - float(relative.group(1)) * _UNITS[relative.group(2)]
    year, month, day = time.localtime(now)[:3]
    midnight = time.mktime((year, month, day, 0, 0, 0, 0, 0, -1))
    if words in ("today", "yesterday"):
        # mktime takes day 0 as the month's last day before: no 24 h across a DST change.
        return (
            midnight if words == "today" else time.mktime((year, month, day - 1, 0, 0, 0, 0, 0, -1))
        )
    text = text.strip().replace("T", " ", 1)
    for layout in _ABSOLUTE:
        try:
            return time.mktime(time.strptime(text, layout))
        except ValueError:
            continue
    for layout in _TIME_OF_DAY:
        try:
            clock = time.strptime(text, layout)
        except ValueError:
            continue
        return midnight + clock.tm_hour * 3600 + clock.tm_min * 60 + clock.tm_sec
    raise ValueError(f"{text!r} is not a time --since understands ({SINCE_HELP})")


def grep_matcher(pattern: str) -> Match:
    """A line's text matches if the regular expression is found in it; case-insensitive
    unless the pattern has a capital letter (as journalctl --grep)."""
    flags = 0 if any(c.isupper() for c in pattern) else re.IGNORECASE
    try:
        regex = re.compile(pattern, flags)
    except re.error as exc:
        raise ValueError(f"--grep {pattern!r} is not a regular expression ({exc})") from None
    return lambda text: regex.search(text) is not None


def merge(per_log: Sequence[tuple[str, Sequence[Line]]]) -> list[tuple[str, str]]:
    """Every ``(name, line)`` in the order of the lines' times; lines of the same time
    keep their order (a stable sort), those of one log first in the order given."""
    timed = [(when, name, line) for name, lines in per_log for when, line in lines]
    timed.sort(key=lambda item: item[0])
    return [(name, line) for _when, name, line in timed]


def prefixer(names: Sequence[str], color: bool) -> Callable[[str, str], str]:
    """``el_serda | line``, names padded to the longest, coloured in turn on a terminal."""
    width = max((len(n) for n in names), default=0)
    heads = {}
    for index, name in enumerate(names):
        head = name.ljust(width)
        if color:
            head = f"{_NAME_COLORS[index % len(_NAME_COLORS)]}{head}{_RESET}"
        heads[name] = head + " | "
    return lambda name, line: heads[name] + line


def show(
    logs: Sequence[tuple[str, Log]],
    *,
    count: int | None,
    since: float | None,
    match: Match | None,
    follow: bool,
    emit: Emit,
    prefix: Callable[[str, str], str] | None,
    clean: Callable[[str], str] | None = None,
) -> None:
    """The last ``count`` lines (None: all) of the logs together, from ``since``, those
    ``match`` accepts; then, with ``follow``, the new ones as they come (for ever).
    ``clean``: what each line's text goes through before its prefix is added."""

    def out(lines: list[tuple[str, str]]) -> None:
        if lines:
            if clean is not None:
                lines = [(name, clean(line)) for name, line in lines]
            emit([line if prefix is None else prefix(name, line) for name, line in lines])

    merged = merge([(name, log.timed_tail(count, since, match)) for name, log in logs])
    if count is not None:
        # The last `count` of them all: each log gave its own last `count` at most.
        merged = merged[max(0, len(merged) - count) :]
    out(merged)
    if not follow:
        return
    first = logs[0][1]
    if isinstance(first, JournalLog):
        # Every reader of the journal wakes up when it changes: one wait serves all.
        while True:
            out(merge([(name, log.timed_poll(match)) for name, log in logs]))
            first.wait(POLL_SEC)  # bounded: Ctrl-C is handled between waits
    with _DirectoryWaker(first.logs_dir) as waker:  # one directory holds every file
        while True:
            out(merge([(name, log.timed_poll(match)) for name, log in logs]))
            waker.wait()
