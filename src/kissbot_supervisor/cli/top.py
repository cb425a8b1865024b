"""``kissbotctl top``: the fleet redrawn in place, like ``pm2 monit`` or ``systemd-cgtop``.

Each refresh asks the supervisor for ``status`` (state, PID, memory, restarts,
uptime) and ``metrics`` (the CPU seconds of each process's current PID, the
only figure status lacks), over the one connection, and draws a frame:

    kissbot-supervisor 0.1.0 (native) · up 01:02:03 · every 2s · by state  15:04:05
    4 bots: 3 running · 1 backoff · hub running
    all: CPU 3.2% · memory 142.0M · 7 restarts · supervisor: CPU 0.1% · memory 15.0M

    NAME          STATE     PID    CPU%    MEM  RESTARTS  UPTIME
    hub           running   4250    0.3  48.2M         0  01:02:01
    morthy        backoff   -         -      -         5  -
    el_serda      running   4251    1.2  48.2M         0  01:02:00

CPU% is the share of one core over the last interval (100 is one core busy),
so the first frame shows ``-`` until there are two readings; a new PID starts
its count again. The rows are sorted with the troubled first (failed, backoff,
starting, stopping, then running, then stopped), the hub always on top; keys
sort by name, CPU, memory or restarts. Rows that do not fit the terminal's
height are counted on the last line; columns that do not fit its width are
left out (PID first, then UPTIME, then RESTARTS) before names are cut.

On a terminal: the alternate screen, keys read one by one without echo; ``q``
leaves with 0, Ctrl-C with 130 (as ``events``), and either way the terminal is
given back as it was (also on SIGTERM, and on an error). A resized window is
redrawn at once. A supervisor that stops answering leaves the last frame up,
says so and is asked again each interval. Anywhere else (a pipe, a file),
``top`` prints one frame measured over one interval, without escape sequences,
and exits: ``kissbotctl top > snapshot.txt``.

The frame is pure text (:func:`render_frame`); the terminal handling is in
:func:`run_top`. Imports ``os``, ``re``, ``time`` and our render helpers when
loaded; ``select``, ``signal``, ``termios`` and ``tty`` only on a terminal.
"""

from __future__ import annotations

import os
import re
import time

from ..kissbot.names import HUB
from ..protocol import EXIT_OK, build_request
from ..status import TROUBLE_ORDER
from .client import ControlError

# _paint: the state colours of the status table, so that both views agree.
from .render import DASH, _paint, clean, format_bytes, format_uptime, truncate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, TextIO

    from .client import Client

DEFAULT_INTERVAL = 2.0
# The sort orders, with the key that picks each on the terminal.
SORTS = {"state": "s", "name": "n", "cpu": "c", "memory": "m", "restarts": "r"}
EXIT_INTERRUPTED = 130  # Ctrl-C, as kissbotctl's other live commands
EXIT_TERMINATED = 143  # SIGTERM: 128 + 15
# Troubled first, in the one order `status --sort state` uses too.
_STATE_RANK = {state: rank for rank, state in enumerate(TROUBLE_ORDER)}
# (header, right-aligned); the order of the row cells.
_COLUMNS = (
    ("NAME", False),
    ("STATE", False),
    ("PID", True),
    ("CPU%", True),
    ("MEM", True),
    ("RESTARTS", True),
    ("UPTIME", False),
)
_DROP_ORDER = (2, 6, 5)  # PID, UPTIME, RESTARTS: left out before a name is cut
_NAME_MIN = 8
_GAP = "  "
_HEADER_ON = "\x1b[7m"  # reverse video, as top(1)'s column header
_RESET = "\x1b[0m"
# The alternate screen (the shell's screen comes back on leaving) and a hidden cursor.
_ENTER = "\x1b[?1049h\x1b[?25l"
_LEAVE = "\x1b[?25h\x1b[?1049l"
# Patterns, not compiled ones: kissbotctl reads this module for the defaults of its
# flags on every run, and re compiles (and caches) them only when top runs.
_CPU_LINE = r'^kissbot_cpu_seconds_total\{process="((?:[^"\\]|\\.)*)"\} (\S+)$'
_SUP_CPU_LINE = r"^kissbot_supervisor_cpu_seconds_total (\S+)$"
_UNESCAPE = r"\\(.)"


def cpu_from_metrics(text: str) -> tuple[dict[str, float], float | None]:
    """The CPU seconds per process, and the supervisor's, read from the metrics text."""

    def number(value: str) -> float | None:
        try:
            return float(value)
        except ValueError:
            return None

    per_process = {}
    for match in re.finditer(_CPU_LINE, text, re.MULTILINE):
        escaped = match.group(1)
        name = re.sub(_UNESCAPE, lambda m: "\n" if m.group(1) == "n" else m.group(1), escaped)
        value = number(match.group(2))
        if value is not None:
            per_process[name] = value
    own = re.search(_SUP_CPU_LINE, text, re.MULTILINE)
    return per_process, None if own is None else number(own.group(1))


class Sample:
    """One reading: the STATUS object and the CPU seconds, at a monotonic time."""

    __slots__ = ("cpu", "status", "supervisor_cpu", "taken")

    def __init__(
        self,
        status: Mapping[str, Any],
        cpu: Mapping[str, float],
        supervisor_cpu: float | None,
        taken: float,
    ) -> None:
        self.status = status
        self.cpu = cpu
        self.supervisor_cpu = supervisor_cpu
        self.taken = taken

    def pids(self) -> dict[str, object]:
        return {str(p.get("name")): p.get("pid") for p in processes(self.status)}


def processes(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    hub = status.get("hub")
    procs: list[Mapping[str, Any]] = [hub] if isinstance(hub, dict) else []
    procs.extend(b for b in status.get("bots") or () if isinstance(b, dict))
    return procs


def cpu_percent(before: Sample | None, after: Sample) -> tuple[dict[str, float], float | None]:
    """CPU% per process between two samples (same PID only), and the supervisor's."""
    if before is None or after.taken <= before.taken:
        return {}, None
    span = after.taken - before.taken
    old_pids = before.pids()
    shares = {}
    for name, pid in after.pids().items():
        then, now = before.cpu.get(name), after.cpu.get(name)
        if pid is None or old_pids.get(name) != pid or then is None or now is None or now < then:
            continue  # not running, or a new PID whose count started again
        shares[name] = 100.0 * (now - then) / span
    own = None
    if before.supervisor_cpu is not None and after.supervisor_cpu is not None:
        own = max(0.0, 100.0 * (after.supervisor_cpu - before.supervisor_cpu) / span)
    return shares, own


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _sort_key(sort: str, cpu: Mapping[str, float]) -> Callable[[Mapping[str, Any]], Any]:
    def key(proc: Mapping[str, Any]) -> Any:
        name = str(proc.get("name"))
        hub_first = name != HUB
        if sort == "cpu":
            return (hub_first, -cpu.get(name, -1.0), name)
        if sort == "memory":
            return (hub_first, -(_number(proc.get("rss_bytes")) or -1.0), name)
        if sort == "restarts":
            return (hub_first, -(_number(proc.get("restarts")) or 0.0), name)
        if sort == "state":
            return (hub_first, _STATE_RANK.get(str(proc.get("state")), -1), name)
        return (hub_first, name)

    return key


def _fmt_pct(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def _cells(proc: Mapping[str, Any], cpu: Mapping[str, float]) -> list[str]:
    pid, restarts = _number(proc.get("pid")), _number(proc.get("restarts"))
    rss = _number(proc.get("rss_bytes"))
    return [
        str(proc.get("name")),
        str(proc.get("state") or DASH),
        DASH if pid is None else str(int(pid)),
        _fmt_pct(cpu.get(str(proc.get("name")))),
        format_bytes(None if rss is None else int(rss)),
        DASH if restarts is None else str(int(restarts)),
        format_uptime(_number(proc.get("uptime_s"))),
    ]


def _layout(rows: Sequence[Sequence[str]], width: int) -> list[tuple[int, int]]:
    natural = [max(len(c[0]), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    shown = dict(enumerate(natural))

    def excess() -> int:
        return sum(shown.values()) + len(_GAP) * (len(shown) - 1) - width

    for index in _DROP_ORDER:
        if excess() <= 0:
            break
        del shown[index]
    shown[0] -= min(max(0, excess()), max(0, shown[0] - _NAME_MIN))
    return sorted(shown.items())


def _row(cells: Sequence[str], layout: Sequence[tuple[int, int]], color: bool) -> str:
    parts = []
    for index, col in layout:
        text = truncate(cells[index], col)
        padded = text.rjust(col) if _COLUMNS[index][1] else text.ljust(col)
        if index == 1 and color:
            padded = _paint(text, text, True) + " " * (col - len(text))
        parts.append(padded)
    return _GAP.join(parts).rstrip()


def render_frame(
    sample: Sample,
    cpu: Mapping[str, float],
    supervisor_cpu: float | None,
    *,
    width: int,
    height: int | None,
    color: bool,
    interval: float,
    sort: str,
    clock: str,
    note: str | None = None,
) -> list[str]:
    """The lines of one frame, each at most ``width`` visible characters, at most
    ``height`` lines (None: every row)."""
    status = clean(sample.status)
    sup = status.get("supervisor") if isinstance(status.get("supervisor"), dict) else {}
    procs = processes(status)
    bots = [p for p in procs if p.get("name") != HUB]
    hub = next((p for p in procs if p.get("name") == HUB), None)

    title = (
        f"kissbot-supervisor {sup.get('version') or '?'} ({status.get('backend') or '?'}) · "
        f"up {format_uptime(_number(sup.get('uptime_s')))} · every {interval:g}s · by {sort}"
    )
    room = width - len(clock) - 2
    head = truncate(title, max(room, 0)).ljust(room) + "  " + clock if room >= 20 else title
    counts: dict[str, int] = {}
    for bot in bots:
        counts[str(bot.get("state"))] = counts.get(str(bot.get("state")), 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (_STATE_RANK.get(kv[0], -1), kv[0]))
    fleet = f"{len(bots)} bot{'s' if len(bots) != 1 else ''}: " + (
        " · ".join(f"{n} {state}" for state, n in ranked) or "none"
    )
    if hub is not None:
        fleet += f" · hub {hub.get('state')}"
    known_cpu = [cpu[str(p.get("name"))] for p in procs if str(p.get("name")) in cpu]
    rss = [int(v) for p in procs if (v := _number(p.get("rss_bytes"))) is not None]
    restarts = sum(int(_number(p.get("restarts")) or 0) for p in procs)
    sup_rss = _number(sup.get("rss_bytes"))
    totals = [
        f"all: CPU {_fmt_pct(sum(known_cpu) if known_cpu else None)}% · "
        f"memory {format_bytes(sum(rss) if rss else None)} · {restarts} restarts",
        f"supervisor: CPU {_fmt_pct(supervisor_cpu)}% · "
        f"memory {format_bytes(None if sup_rss is None else int(sup_rss))}",
    ]
    if len(" · ".join(totals)) <= width:
        totals = [" · ".join(totals)]  # one line when it fits, else the supervisor's below
    lines = [truncate(head, width), truncate(fleet, width)]
    lines += [truncate(line, width) for line in totals]
    lines.append(truncate(note, width) if note else "")

    ordered = sorted(procs, key=_sort_key(sort, cpu))
    rows = [_cells(p, cpu) for p in ordered]
    layout = _layout(rows, width)
    header = _row([c[0] for c in _COLUMNS], layout, False)
    lines.append(f"{_HEADER_ON}{header.ljust(width)}{_RESET}" if color else header)
    # On a terminal the last line is the keys' line.
    room_rows = len(rows) if height is None else min(len(rows), max(0, height - len(lines) - 1))
    if room_rows < len(rows):
        room_rows = max(0, room_rows - 1)  # the last line says how many are not shown
    lines.extend(_row(cells, layout, color) for cells in rows[:room_rows])
    hidden = len(rows) - room_rows
    if hidden:
        lines.append(truncate(f"… {hidden} more (by {sort}); a taller window shows them", width))
    keys = "q quit · sort: s state, n name, c CPU, m memory, r restarts"
    if height is not None and len(lines) < height:
        lines.extend([""] * (height - len(lines) - 1))
        lines.append(truncate(keys, width))
    return lines[: height if height is not None else len(lines)]


# --- the I/O: readings, the terminal ------------------------------------------------


def take_sample(client: Client) -> Sample:
    """``status`` and ``metrics`` over the one connection; raises ControlError."""
    answers = []
    for cmd in ("status", "metrics"):
        response = client.request(build_request(cmd))
        if response.get("ok") is not True:
            raise ControlError(str(response.get("error") or "the supervisor refused the request"))
        answers.append(response.get(cmd))
    status, text = answers
    if not isinstance(status, dict) or not isinstance(text, str):
        raise ControlError("the supervisor's answer has no status object or metrics text")
    cpu, own = cpu_from_metrics(text)
    return Sample(status, cpu, own, time.monotonic())


class _Top:
    """The state of one run: the last two samples, the sort, the client."""

    def __init__(
        self, connect: Callable[[], Client], interval: float, sort: str, color: bool
    ) -> None:
        self.connect = connect
        self.client = connect()
        self.interval = interval
        self.sort = sort
        self.color = color
        self.before: Sample | None = None
        self.after: Sample | None = None
        self.note: str | None = None

    def read(self) -> None:
        try:
            sample = take_sample(self.client)
        except ControlError as exc:
            if self.after is None:
                raise  # never answered: the usual one-line error
            self.client.close()
            self.client = self.connect()  # Client connects again on its next request
            self.note = f"{exc.message}; asking again every {self.interval:g}s"
            return
        self.before, self.after, self.note = self.after, sample, None

    def frame(self, width: int, height: int | None) -> list[str]:
        assert self.after is not None
        cpu, own = cpu_percent(self.before, self.after)
        return render_frame(
            self.after,
            cpu,
            own,
            width=width,
            height=height,
            color=self.color,
            interval=self.interval,
            sort=self.sort,
            clock=time.strftime("%H:%M:%S"),
            note=self.note,
        )


def run_top(
    connect: Callable[[], Client],
    *,
    interval: float,
    sort: str,
    out: TextIO,
    keys_fd: int | None,
    color: bool,
    size: Callable[[], tuple[int, int]],
) -> int:
    """Redraw until ``q`` (0) or Ctrl-C (130) on a terminal; else print one frame (0).

    ``keys_fd`` is the terminal to read keys from (None: not a terminal);
    ``size`` gives (columns, lines) of ``out``.
    """
    top = _Top(connect, interval, sort, color)
    try:
        top.read()
        if not out.isatty():
            time.sleep(interval)  # the interval CPU% is measured over, not a wait for anything
            top.read()
            out.write("\n".join(line.rstrip() for line in top.frame(size()[0], None)) + "\n")
            return EXIT_OK
        return _live(top, out, keys_fd, size)
    finally:
        top.client.close()


def _live(top: _Top, out: TextIO, keys_fd: int | None, size: Callable[[], tuple[int, int]]) -> int:
    import select
    import signal
    import termios
    import tty

    saved = termios.tcgetattr(keys_fd) if keys_fd is not None else None
    # SIGWINCH wakes the select below through this pipe (signal.set_wakeup_fd).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    old_winch = signal.signal(signal.SIGWINCH, lambda *_: None)
    old_term = signal.signal(signal.SIGTERM, _terminated)
    try:
        if keys_fd is not None:
            tty.setcbreak(keys_fd)  # keys one by one, no echo; Ctrl-C still interrupts
        out.write(_ENTER)
        while True:
            _draw(top, out, size)
            deadline = time.monotonic() + top.interval
            while (left := deadline - time.monotonic()) > 0:
                watched = [wake_r] if keys_fd is None else [wake_r, keys_fd]
                ready, _, _ = select.select(watched, [], [], left)
                if wake_r in ready:
                    os.read(wake_r, 512)
                    _draw(top, out, size)  # resized: redraw now, at the new size
                if keys_fd is not None and keys_fd in ready:
                    for key in os.read(keys_fd, 64).decode(errors="replace"):
                        if key in "qQ":
                            return EXIT_OK
                        sort = next((s for s, k in SORTS.items() if k == key.lower()), None)
                        if sort is not None:
                            top.sort = sort
                            _draw(top, out, size)
            top.read()
    finally:
        out.write(_LEAVE)
        out.flush()
        if keys_fd is not None and saved is not None:
            termios.tcsetattr(keys_fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGWINCH, old_winch)
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_TERMINATED)  # unwinds through the finally that restores the terminal


def _draw(top: _Top, out: TextIO, size: Callable[[], tuple[int, int]]) -> None:
    columns, lines = size()
    frame = top.frame(columns, lines)
    # Home, each line then clear to its end, clear below: no flicker of a full clear.
    out.write("\x1b[H" + "\x1b[K\r\n".join(frame) + "\x1b[K\x1b[J")
    out.flush()
