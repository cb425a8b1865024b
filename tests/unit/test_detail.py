"""``kissbotctl status NAME``: one process in detail (cli/detail.py), and the STATUS=
text as the table's last column (cli/render.py)."""

from __future__ import annotations

import io
import time

import pytest

from kissbot_supervisor.cli.detail import render_detail
from kissbot_supervisor.cli.render import fit_stream, render_status

from .test_render import ANSI, _hub, _lines, _proc, _status

NOW = 1_764_000_000.0


def stamp(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def failed_bot() -> dict[str, object]:
    return _proc(
        "morthy",
        "failed",
        restarts=4,
        last_exit="exited 1",
        reason="exited 1 5 times in a row; parked",
        since=NOW - 161,
        argv=["/srv/kissbot/venv/bin/python", "main.py", "--channel", "morthy"],
        exits=[
            {"time": NOW - 200, "exit": "killed by SIGKILL (watchdog timeout)"},
            {"time": NOW - 161, "exit": "exited 1"},
        ],
        status_text="joining #morthy",
    )


def detail(proc: dict[str, object], **kw: object) -> list[str]:
    args: dict[str, object] = {
        "color": False,
        "width": 100,
        "now": NOW,
        "log_where": "/srv/kissbot/logs/supervisor/morthy.log",
        "log_lines": ["2026-11-24T01:02:03.456 Traceback (most recent call last):"],
    }
    args.update(kw)
    return _lines(render_detail(proc, **args))  # type: ignore[arg-type]


def test_everything_an_operator_asks_first() -> None:
    lines = detail(failed_bot())
    assert lines[0] == f"● morthy · failed since {stamp(NOW - 161)} (00:02:41 ago)"
    assert '    Status: "joining #morthy" (before its exit)' in lines  # not running now
    assert "       PID: -" in lines
    assert "   Command: /srv/kissbot/venv/bin/python main.py --channel morthy" in lines
    assert "     Token: valid" in lines
    restarts = lines.index("  Restarts: 4 · last exits, newest first:")
    assert lines[restarts + 1 : restarts + 3] == [
        f"            {stamp(NOW - 161)}  exited 1",
        f"            {stamp(NOW - 200)}  killed by SIGKILL (watchdog timeout)",
    ]
    assert "    Reason: exited 1 5 times in a row; parked" in lines
    assert "       Log: /srv/kissbot/logs/supervisor/morthy.log" in lines
    assert lines[-2:] == ["", "2026-11-24T01:02:03.456 Traceback (most recent call last):"]


def test_a_running_process_and_what_is_not_known() -> None:
    proc = _proc("el_serda", "running", since=None, argv=None, exits=[])
    lines = detail(proc, log_lines=[])
    assert lines[0] == "● el_serda · running"  # since: not known (an older supervisor)
    said = detail(proc | {"status_text": "joined #el_serda"}, log_lines=[])
    assert '    Status: "joined #el_serda"' in said
    assert "       PID: 4251 · up 2d 03:14:04 · mem 48.2M" in lines
    assert not any(line.lstrip().startswith(("Command", "Status", "Reason")) for line in lines)
    assert "  Restarts: 0" in lines
    assert lines[-1] == "(its log is empty)"


def test_a_stopped_on_purpose_process_says_so() -> None:
    proc = _proc("quiet", "stopped", want=False, exits=[], last_exit="exited 0")
    lines = detail(proc, log_lines=None, log_problem="no log of 'quiet'")
    assert lines[0] == "● quiet · stopped · stopped on purpose"
    assert "  Restarts: 0 · last exit: exited 0" in lines
    assert lines[-1] == "(no log lines: no log of 'quiet')"


def test_the_hub_shows_its_socket() -> None:
    lines = detail(_hub(token_state=None, exits=[]))
    assert "    Socket: /tmp/kissbot_hub.sock" in lines
    assert not any("Token" in line for line in lines)


@pytest.mark.parametrize("width", [40, 60, 80])
def test_it_fits_the_width_and_log_lines_are_cut_only_when_asked(width: int) -> None:
    long_line = "2026-11-24T01:02:03.456 " + "x" * 200
    lines = detail(failed_bot(), width=width, log_lines=[long_line])
    assert all(len(line) <= width for line in lines), lines
    whole = detail(failed_bot(), width=width, log_lines=[long_line], cut_log_lines=False)
    assert whole[-1] == long_line


def test_colour_on_the_bullet_and_the_state_only() -> None:
    first = detail(failed_bot(), color=True)[0]
    assert first.startswith("\x1b[31m●\x1b[0m morthy · \x1b[31mfailed\x1b[0m since")
    assert ANSI.sub("", first) == detail(failed_bot())[0]


def test_colour_never_adds_text_on_a_tiny_width() -> None:
    for width in range(8, 40):
        plain = detail(failed_bot(), width=width)[0]
        assert ANSI.sub("", detail(failed_bot(), color=True, width=width)[0]) == plain


def test_a_bots_words_cannot_drive_the_terminal() -> None:
    proc = failed_bot() | {"status_text": "\x1b[2Jgone", "argv": ["bot", "\x1b]0;title\x07"]}
    text = render_detail(
        proc, color=False, width=100, now=NOW, log_where="x", log_lines=["\x1b[31mred"]
    )
    assert "\x1b" not in text
    assert "\x07" not in text


def test_the_bullet_falls_back_to_ascii() -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    fit_stream(out)
    out.write(
        render_detail(failed_bot(), color=False, width=80, now=NOW, log_where="x", log_lines=[])
    )
    out.flush()
    assert raw.getvalue().decode("ascii").startswith("* morthy | failed since ")


# --- the STATUS= text in the table ----------------------------------------------------


def with_status_text() -> dict[str, object]:
    return _status(
        None,
        [
            _proc("el_serda", "running", status_text="joined #el_serda, 42 viewers"),
            _proc("morthy", "failed", last_exit="exited 1"),
        ],
    )


def test_the_status_text_is_the_last_column_where_it_fits() -> None:
    lines = _lines(render_status(with_status_text(), color=False, width=120))
    header = next(line for line in lines if line.startswith("CHANNEL"))
    assert header.split()[-1] == "STATUS"
    rows = lines[lines.index(header) + 1 :]
    assert rows[0].endswith(" joined #el_serda, 42 viewers")
    assert rows[1].endswith(" -")


def test_the_status_column_shrinks_then_goes_first_when_narrow() -> None:
    cut = _lines(render_status(with_status_text(), color=False, width=81))
    row = next(line for line in cut if line.startswith("el_serda"))
    assert row.endswith("joined #el_serd…")  # cut to 16
    narrow = _lines(render_status(with_status_text(), color=False, width=80))
    header = next(line for line in narrow if line.startswith("CHANNEL"))
    assert "STATUS" not in header
    assert "LAST EXIT" in header  # the STATUS column went first
    assert any(line.startswith("(STATUS: no room at 80 columns") for line in narrow)


def test_no_status_column_when_no_bot_has_a_text() -> None:
    lines = _lines(render_status(_status(None, [_proc("el_serda", "running")]), color=False))
    assert not any("STATUS" in line for line in lines)


def test_the_status_text_of_a_process_that_is_not_running_is_not_shown_as_now() -> None:
    # The core keeps a bot's last STATUS= text after its exit.
    status = _status(None, [_proc("morthy", "backoff", status_text="joined #morthy")])
    lines = _lines(render_status(status, color=False, width=120))
    assert not any("STATUS" in line or "joined" in line for line in lines)
