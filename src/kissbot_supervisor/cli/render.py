"""The human status table ``kissbotctl status`` prints: pure text from a STATUS object.

Layout (the old KissBot supervisor's, fitted to 80 columns)::

    ══ KissBot supervisor ══════════════════════════════════════════════════
    backend native · PID 4242 · up 2d 03:14:07 · version 0.1.0
    3/4 bots running · 1 failed
    hub      running · PID 4250 · up 2d 03:14:05 · restarts 0 · mem 48.2M
             socket /tmp/kissbot_hub.sock

    CHANNEL   STATE    PID   UPTIME       RESTARTS  MEM    LAST EXIT  TOKEN
    el_serda  running  4251  2d 03:14:04         0  48.2M  -          valid
    morthy    failed   -     -                   5  -      exit 1     revoked
        ↳ token revoked: re-authorise with kissbot's oauth script

Columns take the width their content needs; a last column, STATUS (the bots'
own STATUS= text), is there when a bot has one. When a row would pass
``width``, LAST EXIT then STATUS shrink (long values end in ``…``), then the
least needed columns are left out, STATUS first (a line below the table says
which), so that channel names and PIDs are shown whole down to about 42
columns. Colour
(ANSI SGR) is added only when asked for, and only around the STATE text, so
it never changes the visible width.

A STATUS object that ``kissbotctl`` read from systemd itself (``"source":
"systemd"``, the supervisor down) starts with the line :data:`OFFLINE_HEADLINE`
and names the supervisor's unit state instead of its PID.

:func:`format_event` renders one line of ``kissbotctl events``;
:func:`progress_text` the line ``start``/``stop``/``restart`` redraw while they wait.

Imports only ``os``, ``textwrap`` and ``time``: ``kissbotctl`` imports this module.
"""

from __future__ import annotations

import os
import textwrap
import time

from ..kissbot.names import LOGIN_MAX
from ..protocol import ALARMS, NoteKind
from ..status import OFFLINE_SOURCE, filter_states, state_counts

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: kissbotctl start-up cost
    from collections.abc import Mapping, Sequence
    from typing import Any, TextIO

__all__ = [
    "ELLIPSIS",
    "OFFLINE_HEADLINE",
    "fit_stream",
    "format_bytes",
    "format_event",
    "format_uptime",
    "progress_text",
    "render_status",
    "truncate",
    "use_color",
]

ELLIPSIS = "…"
DASH = "-"
# A STATUS object with "source": "systemd" was read from systemd by kissbotctl
# itself (systemd/offline.py): the supervisor is not running.
OFFLINE_HEADLINE = "supervisor not running: state read from systemd"
OFFLINE_FOOTNOTE = (
    "Units systemd no longer has loaded (stopped bots) are not listed; "
    "tokens and wanted states are known to the supervisor only."
)

_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_STATE_COLORS = {
    "running": "\x1b[32m",  # green
    "starting": "\x1b[33m",  # yellow
    "backoff": "\x1b[33m",
    "stopping": "\x1b[33m",
    "failed": "\x1b[31m",  # red
    "stopped": "\x1b[2m",  # dim
}


# On a terminal whose encoding lacks them (PYTHONIOENCODING=latin-1, an old
# serial console), our few drawing characters become ASCII of the same width,
# so that the table stays aligned; anything else that cannot be written (a
# bot's message) becomes "?". Never a traceback for an encoding.
_ASCII_FALLBACK = {"═": "=", "·": "|", "…": "~", "↳": ">", "●": "*"}
_FALLBACK_ERRORS = "kissbot-ascii"


def _fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return "".join(_ASCII_FALLBACK.get(c, "?") for c in bad), exc.end


def fit_stream(stream: TextIO) -> None:
    """Make ``stream`` write what its encoding cannot hold as ASCII (see above)."""
    import codecs

    encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("_", "-")
    if encoding.startswith("utf") or not hasattr(stream, "reconfigure"):
        return
    try:
        codecs.lookup_error(_FALLBACK_ERRORS)
    except LookupError:
        codecs.register_error(_FALLBACK_ERRORS, _fallback)
    stream.reconfigure(errors=_FALLBACK_ERRORS)


def use_color(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set (any value) or ``TERM=dumb``."""
    if env is None:
        env = os.environ
    if "NO_COLOR" in env or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # closed or detached stream
        return False


def format_uptime(seconds: float | None) -> str:
    """``03:14:07`` under a day, ``2d 03:14:07`` from one day on, ``-`` for None."""
    if seconds is None:
        return DASH
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


_UNITS = ("K", "M", "G", "T")


def format_bytes(count: int | None) -> str:
    """Binary units with one decimal: ``512B``, ``48.2M``, ``1.5G``; ``-`` for None.

    A value that would print as 1000 or more of a unit moves to the next unit
    (``1000.0K`` reads as ``1.0M``), so the text is at most six characters below
    a thousand terabytes.
    """
    if count is None:
        return DASH
    if count < 1000:
        return f"{max(0, count)}B"
    value = float(count)
    for unit in _UNITS:
        value /= 1024.0
        if round(value, 1) < 1000 or unit == _UNITS[-1]:
            return f"{value:.1f}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


# C0 and C1 controls and DEL: a bot's STATUS= text or exit reason could carry
# terminal escape sequences (clear the screen, retitle the window, fake lines);
# the terminal gets "?" instead, and whitespace controls become spaces.
_CONTROLS = {c: "?" for c in (*range(0x20), *range(0x7F, 0xA0))} | dict.fromkeys(
    map(ord, "\t\n\r\v\f"), " "
)


def clean(value: object) -> Any:
    """``value`` with every string in it (keys and values, nested) free of controls."""
    if isinstance(value, str):
        return value.translate(_CONTROLS)
    if isinstance(value, dict):  # what JSON gives: dicts and lists
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one ``…`` when cut."""
    if len(text) <= width:
        return text
    if width <= 0:
        return ""
    return text[: width - 1] + ELLIPSIS


def _str(value: object) -> str:
    if value is None or value == "":
        return DASH
    return str(value)


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _float_or_none(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _paint(text: str, state: str, color: bool) -> str:
    code = _STATE_COLORS.get(state)
    if not color or code is None:
        return text
    return f"{code}{text}{_RESET}"


def _flow(pieces: Sequence[str], width: int, first: str, indent: int) -> list[str]:
    """Join ``pieces`` with `` · `` into lines of at most ``width``, wrapping between pieces.

    ``first`` starts the first line; later lines start with ``indent`` spaces.
    A piece too long for a line of its own is truncated.
    """
    lines: list[str] = []
    current = first
    has_piece = False
    pad = " " * indent
    for piece in pieces:
        joined = f"{current} · {piece}" if has_piece else current + piece
        if len(joined) <= width:
            current, has_piece = joined, True
            continue
        if has_piece:
            lines.append(current)
            current = pad
        current = truncate(current + piece, width)
        has_piece = True
    lines.append(current)
    return lines


def _reason_lines(reason: object, width: int, indent: int) -> list[str]:
    if not isinstance(reason, str) or not reason.strip():
        return []
    lead = " " * indent + "↳ "
    return textwrap.wrap(
        " ".join(reason.split()),
        width=max(width, len(lead) + 10),
        initial_indent=lead,
        subsequent_indent=" " * len(lead),
        break_on_hyphens=False,
    )


def _banner(status: Mapping[str, Any], width: int, color: bool) -> list[str]:
    title = " KissBot supervisor "
    rule = "══" + title + "═" * max(0, width - len(title) - 2)
    rule = truncate(rule, width)
    if color:
        rule = f"{_BOLD}{rule}{_RESET}"
    sup = status.get("supervisor")
    sup = sup if isinstance(sup, dict) else {}
    pieces = [f"backend {_str(status.get('backend'))}"]
    if sup.get("running") is False:
        pieces.append(_supervisor_unit(sup))
    else:
        pieces.append(f"PID {_str(_int_or_none(sup.get('pid')))}")
        pieces.append(f"up {format_uptime(_float_or_none(sup.get('uptime_s')))}")
    if sup.get("rss_bytes") is not None:
        pieces.append(f"mem {format_bytes(_int_or_none(sup.get('rss_bytes')))}")
    if sup.get("version"):
        pieces.append(f"version {sup['version']}")
    lines = [rule, *_flow(pieces, width, "", 0)]
    if "bots" in status:  # absent when only the hub was asked for
        lines.extend(_counts(status, width, color))
    return lines


def _counts(status: Mapping[str, Any], width: int, color: bool) -> list[str]:
    """``57/60 bots running · 2 backoff · 1 failed``: the fleet at a glance, each
    state that is not running counted (and coloured as in the table)."""
    bots = [b for b in status.get("bots") or [] if isinstance(b, dict)]
    counts = state_counts(bots)
    noun = "bot" if len(bots) == 1 else "bots"
    head = f"{counts.pop('running', 0)}/{len(bots)} {noun} running"
    pieces = [f"{n} {state}" for state, n in counts.items()]
    lines = _flow([head, *pieces], width, "", 0)
    if color:
        # No piece holds " · ": each line splits back into its pieces.
        painted = {
            f"{n} {state}": _paint(f"{n} {state}", state, True) for state, n in counts.items()
        }
        lines = [" · ".join(painted.get(p, p) for p in line.split(" · ")) for line in lines]
    return lines


def _supervisor_unit(sup: Mapping[str, Any]) -> str:
    """The banner piece for a supervisor that is not running (status read from systemd)."""
    unit = sup.get("unit")
    if not unit:
        return "supervisor unit not loaded"
    return f"{unit} {_str(sup.get('active_state'))} ({_str(sup.get('sub_state'))})"


def _hub_block(status: Mapping[str, Any], width: int, color: bool) -> list[str]:
    if "hub" not in status:
        return []  # filtered out: not asked for
    hub = status["hub"]
    if not isinstance(hub, dict):
        # Read from systemd, no hub unit means no running hub, not "disabled": only
        # the supervisor's config knows that.
        return ["hub: no unit" if status.get("source") == OFFLINE_SOURCE else "hub: disabled"]
    label = "hub      "
    state = _str(hub.get("state"))
    pieces = [
        state,
        f"PID {_str(_int_or_none(hub.get('pid')))}",
        f"up {format_uptime(_float_or_none(hub.get('uptime_s')))}",
        f"restarts {_str(_int_or_none(hub.get('restarts')))}",
        f"mem {format_bytes(_int_or_none(hub.get('rss_bytes')))}",
    ]
    if hub.get("token_state"):
        pieces.append(f"token {hub['token_state']}")
    if hub.get("last_exit"):
        pieces.append(f"last exit {hub['last_exit']}")
    lines = _flow(pieces, width, label, len(label))
    if hub.get("socket"):
        lines.append(truncate(" " * len(label) + f"socket {hub['socket']}", width))
    lines.extend(_reason_lines(hub.get("reason"), width, len(label)))
    if color and lines[0].startswith(label + state):
        # The state is the first piece on the first line; colour it in place.
        lines[0] = label + _paint(state, state, True) + lines[0][len(label) + len(state) :]
    return lines


# Table columns: (header, right-aligned).
_COLUMNS: tuple[tuple[str, bool], ...] = (
    ("CHANNEL", False),
    ("STATE", False),
    ("PID", True),
    ("UPTIME", True),
    ("RESTARTS", True),
    ("MEM", True),
    ("LAST EXIT", False),
    ("TOKEN", False),
    ("STATUS", False),  # the bot's own STATUS= text; only when one has some
)
_STATUS_COLUMN = 8
_GAP = " "  # as ps(1): 80 columns are tight for eight columns
# When a row is too wide: first the free-text columns are cut to what still says
# something, (column, down to width): LAST EXIT to 9 (the reason line usually
# says more), then STATUS to 16.
_SHRINK_FIRST = ((6, 9), (_STATUS_COLUMN, 16))
# Then whole columns are left out, the least needed first (STATUS, a bot's own
# words that `status NAME` shows whole, LAST EXIT, MEM, UPTIME, TOKEN, RESTARTS):
# a cut channel name or PID is of no use to anyone, a missing column is said
# below the table.
_DROP_ORDER = (_STATUS_COLUMN, 6, 5, 3, 7, 4)
# Only when CHANNEL, STATE and PID alone are too wide (about 42 columns, or a bad
# value from a broken daemon) are they cut, the channel last; never narrower
# than a header.
_SHRINK_LAST = ((1, 5), (2, 3), (0, 7))


def _bot_cells(bot: Mapping[str, Any]) -> list[str]:
    channel = bot.get("channel") or bot.get("name")
    return [
        _str(channel),
        _str(bot.get("state")),
        _str(_int_or_none(bot.get("pid"))),
        format_uptime(_float_or_none(bot.get("uptime_s"))),
        _str(_int_or_none(bot.get("restarts"))),
        format_bytes(_int_or_none(bot.get("rss_bytes"))),
        _str(bot.get("last_exit")),
        _str(bot.get("token_state")),
        # A process that is not running keeps its last STATUS= text in the status
        # ("joined #x" of a bot now failed): words of the past, not shown as now's.
        _str(bot.get("status_text") if bot.get("pid") is not None else None),
    ]


def _layout(natural: dict[int, int], width: int) -> list[tuple[int, int]]:
    """The columns shown, as (column index, width), for rows of ``width`` columns."""
    widths = dict(natural)

    def excess() -> int:
        return sum(widths.values()) + len(_GAP) * (len(widths) - 1) - width

    for index, minimum in _SHRINK_FIRST:
        if index in widths:
            widths[index] -= min(max(0, excess()), max(0, widths[index] - minimum))
    for index in _DROP_ORDER:
        if excess() <= 0:
            break
        widths.pop(index, None)
    for index, minimum in _SHRINK_LAST:
        widths[index] -= min(max(0, excess()), max(0, widths[index] - minimum))
    return sorted(widths.items())


def _row(
    cells: Sequence[str], layout: Sequence[tuple[int, int]], state: str | None, color: bool
) -> str:
    parts: list[str] = []
    for index, col_width in layout:
        text = truncate(cells[index], col_width)
        padded = text.rjust(col_width) if _COLUMNS[index][1] else text.ljust(col_width)
        if index == 1 and state is not None:
            padded = _paint(text, state, color) + " " * (col_width - len(text))
        parts.append(padded)
    return _GAP.join(parts).rstrip()


def _bot_table(bots: Sequence[Mapping[str, Any]], width: int, color: bool) -> list[str]:
    if not bots:
        return ["no bots"]
    rows = [_bot_cells(b) for b in bots]
    headers = [c[0] for c in _COLUMNS]
    natural = {i: max(len(headers[i]), *(len(r[i]) for r in rows)) for i in range(len(headers))}
    # A login is at most LOGIN_MAX long: a longer value (a broken daemon) is cut, and
    # does not push every other column out.
    natural[0] = min(natural[0], LOGIN_MAX)
    if all(cells[_STATUS_COLUMN] == DASH for cells in rows):
        del natural[_STATUS_COLUMN]  # no bot says anything: no column of dashes
    layout = _layout(natural, width)
    lines = [_row(headers, layout, None, False)]
    for bot, cells in zip(bots, rows, strict=True):
        lines.append(_row(cells, layout, cells[1], color))
        lines.extend(_reason_lines(bot.get("reason"), width, 4))
    left_out = [headers[i] for i in natural if i not in dict(layout)]
    if left_out:
        lines.extend(
            textwrap.wrap(
                f"({', '.join(left_out)}: no room at {width} columns; a wider terminal "
                "or --json shows them)",
                width=max(width, 20),
            )
        )
    return lines


def render_status(
    status: Mapping[str, Any],
    *,
    color: bool,
    width: int = 80,
    states: Sequence[str] | None = None,
) -> str:
    """The status table, lines joined with newlines and a final newline.

    With ``states``, only the processes in one of them are listed, while the
    header still counts every bot of ``status`` (the fleet, or those named):
    the table shows the few that matter, the header how many there are of each.

    Every line fits ``width`` columns (visible characters; colour codes do not
    count) for any ``width`` of 40 or more: columns are left out, then values
    cut with ``…``. Below that the column minimums win and rows may overflow.
    """
    status = clean(status)
    lines: list[str] = []
    offline = status.get("source") == OFFLINE_SOURCE
    if offline:
        lines.append(truncate(OFFLINE_HEADLINE, width))
    lines.extend(_banner(status, width, color))
    shown = status if states is None else filter_states(status, states)
    bots = [b for b in shown.get("bots") or [] if isinstance(b, dict)]
    lines.extend(_hub_block(shown, width, color))
    if "bots" in shown:
        lines.append("")
        if states is None or bots:
            lines.extend(_bot_table(bots, width, color))
        else:
            lines.append(truncate(f"no bots {' or '.join(states)}", width))
    if offline:
        lines.append("")
        lines.extend(textwrap.wrap(OFFLINE_FOOTNOTE, width=max(width, 20)))
    return "\n".join(lines) + "\n"


# Event kinds by colour: what is now well, what is going wrong but being
# handled, what needs an operator, and what was asked for.
_EVENT_COLORS: dict[str, str] = {
    **dict.fromkeys(
        (NoteKind.STARTED, NoteKind.READY, NoteKind.ADOPTED, NoteKind.ADDED), "\x1b[32m"
    ),
    **dict.fromkeys(
        (
            NoteKind.EXITED,
            NoteKind.BACKOFF,
            NoteKind.RESTARTING,
            NoteKind.CHANGED,
            NoteKind.SHUTDOWN,
        ),
        "\x1b[33m",
    ),
    **dict.fromkeys(ALARMS, "\x1b[31m"),
    **dict.fromkeys((NoteKind.STOPPED, NoteKind.REMOVED, NoteKind.FINISHED), "\x1b[2m"),
}


_GOALS = {"start": "to be ready", "restart": "to be ready", "stop": "to stop"}


def progress_text(
    cmd: str, waiting: Sequence[str], total: int, elapsed: float, limit: float, width: int
) -> str:
    """``restart: 57/60 done, waiting for el_serda and 2 more to be ready... 12 s (max 65 s)``:
    as many names as fit in ``width`` columns (less one: the cursor stays on the line,
    which must not wrap to be redrawn in place)."""
    goal = _GOALS.get(cmd, "to settle")
    head = f"{cmd}: {total - len(waiting)}/{total} done, " if total > 1 else f"{cmd}: "
    tail = f" {goal}... {elapsed:.0f} s (max {limit:.0f} s)"
    for shown in range(len(waiting), 0, -1):
        names = ", ".join(waiting[:shown])
        if shown < len(waiting):
            names += f" and {len(waiting) - shown} more"
        text = f"{head}waiting for {names}{tail}"
        if len(text) < width:
            return text
    return truncate(f"{head}waiting for {len(waiting)}{tail}", width - 1)


def format_event(event: Mapping[str, Any], *, color: bool) -> str:
    """One human line for an EVENT: ``2026-11-24 01:02:03 el_serda exited: killed by SIGKILL``.

    The time is local. The kind is left out when the message already starts
    with it (``el_serda started (PID 12)``, not ``started: started (PID 12)``).
    With ``color``, the kind (or the message that starts with it) is coloured.
    """
    event = clean(event)
    when = _float_or_none(event.get("time"))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    name = _str(event.get("name"))
    kind = str(event.get("kind") or "")
    message = " ".join(str(event.get("message") or "").split())
    code = _EVENT_COLORS.get(kind) if color else None
    if kind and not message.startswith(kind):
        head, rest = kind, f": {message}" if message else ""
    else:
        head, rest = message[: len(kind)], message[len(kind) :]
    if code is not None and head:
        head = f"{code}{head}{_RESET}"
    return f"{stamp} {name} {head}{rest}"
