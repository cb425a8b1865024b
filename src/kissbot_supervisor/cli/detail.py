"""``kissbotctl status NAME``: one process in detail, as ``systemctl status`` shows a unit.

Pure text from one process entry of the STATUS object, plus the log lines the
caller read (``cli/ctl.py`` does the I/O)::

    ● el_serda · failed since 2026-12-06 14:03:12 (00:02:41 ago)
        Status: "connected to #el_serda"
           PID: - · mem -
       Command: /srv/kissbot/venv/bin/python main.py --channel el_serda
         Token: valid
      Restarts: 4 · last exits, newest first:
                2026-12-06 14:03:12  exited 1
                2026-12-06 14:02:58  exited 1
        Reason: exited 1 5 times in a row ...
           Log: /srv/kissbot/logs/supervisor/el_serda.log

    2026-12-06T14:03:12.120 Traceback (most recent call last):
    ...

Labels are right-aligned, values wrap under themselves; the bullet and the state
take the state's colour. Every string from the process (its STATUS= text, its
command line, its log lines) is cleaned of terminal controls first. Imports what
:mod:`.render` imports: kissbotctl loads it for ``status NAME`` only.
"""

from __future__ import annotations

import textwrap
import time

from ..kissbot.names import HUB
from .render import (
    DASH,
    _float_or_none,
    _int_or_none,
    _paint,
    clean,
    format_bytes,
    format_uptime,
    truncate,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

__all__ = ["BULLET", "render_detail"]

BULLET = "●"  # as systemctl; "*" where the terminal lacks it (render._ASCII_FALLBACK)
_LABEL = 10  # "  Restarts" : the widest label, right-aligned, then ": "
_STAMP = "%Y-%m-%d %H:%M:%S"


def _stamp(when: float) -> str:
    return time.strftime(_STAMP, time.localtime(when))


def _field(label: str, value: str, width: int) -> list[str]:
    """``   Label: value``, the value wrapped under itself (long words cut, never lost
    for a short one)."""
    lead = label.rjust(_LABEL) + ": "
    return textwrap.wrap(
        value,
        width=max(width, len(lead) + 20),
        initial_indent=lead,
        subsequent_indent=" " * len(lead),
        break_on_hyphens=False,
        break_long_words=True,
    ) or [lead.rstrip()]


def _headline(proc: Mapping[str, Any], now: float, color: bool, width: int) -> str:
    name = str(proc.get("channel") or proc.get("name") or "?")
    state = str(proc.get("state") or DASH)
    since = _float_or_none(proc.get("since"))
    text = f" {name} · {state}"
    if since is not None:
        text += f" since {_stamp(since)} ({format_uptime(now - since)} ago)"
    if proc.get("want") is False and state != "running":
        text += " · stopped on purpose"
    text = truncate(text, width - 1)
    if not color:
        return BULLET + text
    # The bullet and the state word in the state's colour, as in the table (the word
    # only when the width left it whole).
    head, sep, rest = text.partition(f" · {state}")
    if not sep:
        return _paint(BULLET, state, True) + text
    return _paint(BULLET, state, True) + head + " · " + _paint(state, state, True) + rest


def _exits(proc: Mapping[str, Any], width: int) -> list[str]:
    restarts = _int_or_none(proc.get("restarts"))
    exits = [e for e in proc.get("exits") or [] if isinstance(e, dict)]
    if not exits:
        last = proc.get("last_exit")
        value = f"{DASH if restarts is None else restarts}"
        return _field("Restarts", value + (f" · last exit: {last}" if last else ""), width)
    lines = _field("Restarts", f"{restarts} · last exits, newest first:", width)
    pad = " " * (_LABEL + 2)
    for entry in reversed(exits):
        when = _float_or_none(entry.get("time"))
        stamp = _stamp(when) if when is not None else DASH.ljust(len("2026-01-01 00:00:00"))
        lines.append(truncate(f"{pad}{stamp}  {entry.get('exit') or DASH}", width))
    return lines


def render_detail(
    proc: Mapping[str, Any],
    *,
    color: bool,
    width: int,
    now: float,
    log_where: str,
    log_lines: Sequence[str] | None,
    log_problem: str | None = None,
    cut_log_lines: bool = True,
) -> str:
    """One process in detail, lines joined with newlines and a final newline.

    ``now`` is the wall clock (for "ago"); ``log_where`` where its log is (a file,
    a unit's journal); ``log_lines`` its last lines, or None with ``log_problem``
    saying why they could not be read. Log lines are cut to ``width`` on a terminal
    (``cut_log_lines``), as systemctl does; ``kissbotctl logs`` shows them whole.
    """
    proc = clean(proc)
    lines = [_headline(proc, now, color, width)]
    status_text = proc.get("status_text")
    pid = _int_or_none(proc.get("pid"))
    if status_text:
        # Kept after an exit: said as what it last said, not as what it says now.
        past = "" if pid is not None else " (before its exit)"
        lines += _field("Status", f'"{status_text}"{past}', width)
    pieces = [f"{DASH if pid is None else pid}"]
    if pid is not None:
        uptime = format_uptime(_float_or_none(proc.get("uptime_s")))
        pieces += [f"up {uptime}", f"mem {format_bytes(_int_or_none(proc.get('rss_bytes')))}"]
    lines += _field("PID", " · ".join(pieces), width)
    argv = proc.get("argv")
    if isinstance(argv, list) and argv:
        import shlex

        lines += _field("Command", shlex.join(str(a) for a in argv), width)
    if proc.get("name") != HUB or proc.get("token_state"):
        lines += _field("Token", str(proc.get("token_state") or DASH), width)
    if proc.get("socket"):
        lines += _field("Socket", str(proc["socket"]), width)
    if proc.get("unit"):
        unit = f"{proc['unit']} ({proc.get('active_state')}/{proc.get('sub_state')})"
        lines += _field("Unit", unit, width)
    lines += _exits(proc, width)
    if proc.get("reason"):
        lines += _field("Reason", " ".join(str(proc["reason"]).split()), width)
    lines += _field("Log", log_where, width)
    lines.append("")
    if log_lines is None:
        lines.append(truncate(f"(no log lines: {log_problem or 'not read'})", width))
    elif not log_lines:
        lines.append("(its log is empty)")
    else:
        for line in clean(list(log_lines)):
            lines.append(truncate(line, width) if cut_log_lines else line)
    return "\n".join(lines) + "\n"
