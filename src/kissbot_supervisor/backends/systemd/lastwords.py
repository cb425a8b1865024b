"""A failed unit's last output lines, read from its journal: why it failed, in its own words.

Under the native backend the supervisor reads every line a process prints, so
its exit comes with its last lines (``backends/native/logfiles.py``). Under
systemd the output goes to the journal; this module reads it back when a unit's
main process fails by itself (an exit status other than 0, or a signal, that
neither the supervisor nor an administrator asked for), so the reason reads
"exited 1 …: "OSError: [Errno -3] Temporary failure in name resolution"" on both
backends, and ``on_failure`` hooks get the same ``KISSBOT_LAST_LINE``.

How:

* The exit is held back for :data:`SETTLE_SEC`: journald reads a unit's output
  stream on its own schedule, and the last lines are often still on their way
  when systemd reports the exit. Nothing waits meanwhile (a timer of the loop),
  and the exit is handed on at once if the unit starts again before that.
* One ``journalctl`` run reads the lines of every exit held back in that time
  (a fleet failing at once costs one run, not a hundred), matching each exited
  PID *and* its unit, as JSON (a MESSAGE may hold any byte), in a process
  group of its own (:func:`spawn`), killed after :data:`TIMEOUT_SEC`; whatever
  happens to it, every exit held back is handed on, with lines or without.
* No ``journalctl``, or a journal the supervisor may not read: no lines, and the
  reasons say "(see its log)" as before. Said once, in the supervisor's log.

Pure parsing (:func:`journal_argv`, :func:`last_lines_by_pid`) is separate from
the running of the child (:class:`LastWords`) so that it is unit-tested alone.
"""

from __future__ import annotations

import json
import os
import signal

from ...runtime.child import LoopChild

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ...runtime.log import Log
    from ...runtime.loop import Loop, Timer

SETTLE_SEC = 0.3  # journald's usual lag is milliseconds; a loaded host's, more
TIMEOUT_SEC = 5.0
MAX_LINE = 512  # characters of one line kept, as on the native backend
KEEP = 3  # lines kept per exit: the last one makes the reason, as on the native backend
MAX_OUTPUT = 1 << 20  # the end of journalctl's output kept (journald lines reach 48 KiB)
ENTRIES_PER_EXIT = 200  # how far back to read, per exit held back
MAX_ENTRIES = 5000
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}


def find_journalctl() -> str | None:
    """journalctl in ENV's PATH (not shutil.which: that loads bz2 and lzma into the daemon)."""
    for directory in ENV["PATH"].split(":"):
        path = os.path.join(directory, "journalctl")
        if os.access(path, os.X_OK):
            return path
    return None


def journal_argv(journalctl: str, exits: Iterable[tuple[str, int]]) -> list[str]:
    """``journalctl`` reading the last entries of these (unit, PID) pairs.

    Matches on two fields are ANDed and on one field ORed: (any of the PIDs)
    and (any of the units), which for PIDs that just exited is each PID in its
    own unit. ``--all``: long and binary fields in full, not ``null``.
    """
    pairs = sorted(set(exits))
    entries = min(MAX_ENTRIES, ENTRIES_PER_EXIT * max(1, len(pairs)))
    argv = [journalctl, "--no-pager", "--quiet", "--all", "--output=json"]
    argv += ["--output-fields=_PID,_SYSTEMD_UNIT,MESSAGE", f"--lines={entries}"]
    argv += sorted({f"_SYSTEMD_UNIT={unit}" for unit, _ in pairs})
    argv += sorted({f"_PID={pid}" for _, pid in pairs})
    return argv


def _message(value: object) -> str | None:
    """A MESSAGE field: a string, or an array of bytes when it is not valid UTF-8."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", "replace")
    return None


def last_lines_by_pid(
    output: bytes, exits: Iterable[tuple[str, int]]
) -> dict[int, tuple[str, ...]]:
    """The last :data:`KEEP` non-blank lines of each (unit, PID) in journalctl's JSON
    output, by PID, each cut at :data:`MAX_LINE` characters.

    An entry counts only with both its PID and its unit: the query's matches are
    (any PID) and (any unit), which lets through a PID of one unit logged by
    another. Lines that are not JSON objects (a warning journalctl printed to
    the same pipe, a line cut at :data:`MAX_OUTPUT`) are skipped.
    """
    wanted = {(unit, str(pid)): pid for unit, pid in exits}
    found: dict[int, list[str]] = {}
    for raw in output.splitlines():
        if not raw.startswith(b"{"):
            continue
        try:
            entry = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if not isinstance(entry, dict):
            continue
        pid = wanted.get((str(entry.get("_SYSTEMD_UNIT")), str(entry.get("_PID"))))
        text = _message(entry.get("MESSAGE"))
        if pid is None or text is None:
            continue
        for line in text.splitlines():
            if line.strip():
                found.setdefault(pid, []).append(line[:MAX_LINE])
    return {pid: tuple(lines[-KEEP:]) for pid, lines in found.items()}


def spawn(argv: list[str]) -> tuple[int, int]:
    """Start ``argv`` with its output (stdout and stderr) on a pipe.

    ``os.posix_spawn``, not the native backend's Spawner: that one loads ctypes
    into a daemon that otherwise never needs it, for things this short read-only
    run does not need (a PDEATHSIG: it ends by itself, or at its timeout). Its
    own process group, so that a kill ends whatever it started; stdin from
    /dev/null; the signals the supervisor handles back to their defaults; an
    exec failure raised here, as an OSError.
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            ENV,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, write_end, 1),
                (os.POSIX_SPAWN_DUP2, write_end, 2),
            ],
            setpgroup=0,
            setsigmask=(),
            setsigdef=(
                signal.SIGTERM,
                signal.SIGINT,
                signal.SIGHUP,
                signal.SIGCHLD,
                signal.SIGPIPE,
            ),
        )
    except OSError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return pid, read_end


class _Held:
    __slots__ = ("deliver", "pid", "unit")

    def __init__(self, unit: str, pid: int, deliver: Callable[[tuple[str, ...]], None]) -> None:
        self.unit = unit
        self.pid = pid
        self.deliver = deliver


class LastWords:
    """Holds failed exits back briefly and hands them on with their last lines."""

    def __init__(self, loop: Loop, log: Log, journalctl: str | None = None) -> None:
        self.loop = loop
        self._log = log
        self._journalctl = journalctl or find_journalctl()
        self._held: dict[str, _Held] = {}  # by process name, waiting for the next run
        self._timer: Timer | None = None
        self._run: _Run | None = None
        self._said_unreadable = False

    def child_pids(self) -> set[int]:
        pid = None if self._run is None else self._run.child.pid
        return set() if pid is None else {pid}

    def hold(
        self, name: str, unit: str, pid: int, deliver: Callable[[tuple[str, ...]], None]
    ) -> None:
        """``deliver(lines)`` soon: after the next journal read (at once without journalctl)."""
        if self._journalctl is None:
            deliver(())
            return
        self.flush(name)  # an earlier exit of the same process goes first
        self._held[name] = _Held(unit, pid, deliver)
        if self._timer is None and self._run is None:
            self._timer = self.loop.call_later(SETTLE_SEC, self._read)

    def flush(self, name: str) -> None:
        """Hand ``name``'s held exit on now, without lines (it is starting again)."""
        held = self._held.pop(name, None)
        if held is None and self._run is not None:
            held = self._run.held.pop(name, None)
        if held is not None:
            held.deliver(())

    def _read(self) -> None:
        self._timer = None
        held, self._held = self._held, {}
        if not held:
            return
        assert self._journalctl is not None
        argv = journal_argv(self._journalctl, ((h.unit, h.pid) for h in held.values()))
        try:
            pid, output_fd = spawn(argv)
        except OSError as e:
            self._unreadable(f"cannot run {self._journalctl}: {e.strerror or e}")
            for h in held.values():
                h.deliver(())
            return
        run = _Run(held)
        # The newest entries come last, and the last lines are what is wanted: on
        # overflow the end is kept, from a line's start.
        run.child = LoopChild(
            self.loop,
            pid,
            output_fd,
            lambda output, _status, problem: self._finish(run, output, problem),
            timeout=TIMEOUT_SEC,
            max_output=MAX_OUTPUT,
            keep_tail=True,
            group=True,
        )
        self._run = run

    def _finish(self, run: _Run, output: bytes, problem: str | None) -> None:
        self._run = None
        if problem is not None:
            self._unreadable(f"{self._journalctl} {problem}")
        lines = last_lines_by_pid(output, ((h.unit, h.pid) for h in run.held.values()))
        for h in run.held.values():
            h.deliver(lines.get(h.pid, ()))
        if not lines and output and not self._said_unreadable:
            # Output, but none of it the units' (journalctl's own complaint, say).
            first = output.splitlines()[0].decode("utf-8", "replace")[:200]
            self._unreadable(f"{self._journalctl} said: {first}")
        if self._held and self._timer is None:
            self._timer = self.loop.call_later(SETTLE_SEC, self._read)

    def _unreadable(self, why: str) -> None:
        if self._said_unreadable:
            return
        self._said_unreadable = True
        self._log.warning(
            "supervisor",
            f"cannot read the units' last lines from the journal ({why}); failure reasons "
            'will say "see its log" instead of the process\'s own words',
        )

    def close(self) -> None:
        """Drop what is held and end a run (the supervisor is stopping: no core to tell)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held.clear()
        if self._run is not None:
            self._run.child.cancel()
            self._run = None


class _Run:
    """One journalctl run and the exits it reads for."""

    __slots__ = ("child", "held")

    def __init__(self, held: dict[str, _Held]) -> None:
        self.held = held
        self.child: LoopChild
