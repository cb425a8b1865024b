"""The human status table: formats, 80-column fit, colour only when asked."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from kissbot_supervisor.cli.render import (
    ELLIPSIS,
    fit_stream,
    format_bytes,
    format_event,
    format_uptime,
    progress_text,
    render_status,
    truncate,
    use_color,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")

LONG_REASON = (
    "token revoked for serda_bot: re-authorise the bot account with KissBot's OAuth "
    "script (python tools/oauth.py --bot), then run kissbotctl start "
    "averyveryverylongchannelnam and check the log at "
    "/srv/kissbot/logs/broadcast/averyveryverylongchannelnam/system.log"
)


def _proc(channel: str, state: str, **extra: Any) -> dict[str, Any]:
    proc: dict[str, Any] = {
        "name": channel,
        "channel": channel,
        "state": state,
        "want": state != "stopped",
        "pid": 4251 if state == "running" else None,
        "uptime_s": 184444.0 if state == "running" else None,
        "restarts": 0,
        "rss_bytes": 50541363 if state == "running" else None,
        "last_exit": None,
        "token_state": "valid",
        "reason": None,
        "status_text": None,
    }
    proc.update(extra)
    return proc


def _status(
    hub: dict[str, Any] | None = None, bots: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "backend": "native",
        "supervisor": {
            "pid": 4242,
            "uptime_s": 184447.9,
            "version": "0.1.0",
            "config": "config/config.yaml",
            "workdir": "/srv/kissbot",
            "control_socket": "/run/kissbot-supervisor/control.sock",
            "rss_bytes": 31457280,
        },
        "hub": hub,
        "bots": bots if bots is not None else [],
    }


def _hub(**extra: Any) -> dict[str, Any]:
    hub = _proc("hub", "running", socket="/tmp/kissbot_hub.sock")
    del hub["channel"]
    hub.update(extra)
    return hub


def _lines(text: str) -> list[str]:
    assert text.endswith("\n")
    return text[:-1].split("\n")


# --- formats -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "00:00:00"),
        (59.99, "00:00:59"),
        (3661, "01:01:01"),
        (86399, "23:59:59"),
        (86400, "1d 00:00:00"),
        (2 * 86400 + 3 * 3600 + 14 * 60 + 7.5, "2d 03:14:07"),
        (123 * 86400 + 5, "123d 00:00:05"),
        (-5, "00:00:00"),
    ],
)
def test_format_uptime(seconds: float | None, text: str) -> None:
    assert format_uptime(seconds) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (None, "-"),
        (0, "0B"),
        (999, "999B"),
        (1000, "1.0K"),
        (1024, "1.0K"),
        (1536, "1.5K"),
        (50541363, "48.2M"),
        (1023 * 1024, "1.0M"),
        (int(999.94 * 1024 * 1024), "999.9M"),
        (int(1.5 * 1024**3), "1.5G"),
        (5 * 1024**4, "5.0T"),
    ],
)
def test_format_bytes(count: int | None, text: str) -> None:
    assert format_bytes(count) == text


def test_format_bytes_stays_short() -> None:
    for exponent in range(40):  # below 1000 TiB
        for mantissa in (1, 999, 1000, 1023, 1024, 1025):
            assert len(format_bytes(mantissa << exponent)) <= 6, mantissa << exponent


def test_truncate() -> None:
    assert truncate("el_serda", 8) == "el_serda"
    assert truncate("el_serda", 7) == "el_ser" + ELLIPSIS
    assert truncate("abc", 1) == ELLIPSIS
    assert truncate("abc", 0) == ""


# --- layout --------------------------------------------------------------------


def test_banner_hub_and_rows() -> None:
    status = _status(
        _hub(),
        [
            _proc("el_serda", "running"),
            _proc("morthy", "failed", restarts=5, last_exit="exit 1", token_state="revoked"),
            _proc("quiet", "stopped", want=False, last_exit="exit 0"),
        ],
    )
    lines = _lines(render_status(status, color=False))
    assert "KissBot supervisor" in lines[0]
    assert "backend native" in lines[1]
    assert "PID 4242" in lines[1]
    assert "up 2d 03:14:07" in lines[1]
    assert lines[2] == "1/3 bots running · 1 failed · 1 stopped"
    hub = next(line for line in lines if line.startswith("hub "))
    assert "running" in hub
    assert "PID 4251" in hub
    assert "restarts 0" in hub
    assert any("socket /tmp/kissbot_hub.sock" in line for line in lines)
    header = next(line for line in lines if line.startswith("CHANNEL"))
    assert header.split() == [
        "CHANNEL",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "MEM",
        "LAST",
        "EXIT",
        "TOKEN",
    ]
    rows = {line.split()[0]: line.split() for line in lines[lines.index(header) + 1 :]}
    assert rows["el_serda"] == [
        "el_serda",
        "running",
        "4251",
        "2d",
        "03:14:04",
        "0",
        "48.2M",
        "-",
        "valid",
    ]
    assert rows["morthy"] == ["morthy", "failed", "-", "-", "5", "-", "exit", "1", "revoked"]
    assert rows["quiet"][:2] == ["quiet", "stopped"]


def test_columns_line_up_under_the_header() -> None:
    status = _status(None, [_proc("el_serda", "running"), _proc("xy_z", "backoff", restarts=12)])
    lines = _lines(render_status(status, color=False))
    header = next(line for line in lines if line.startswith("CHANNEL"))
    rows = lines[lines.index(header) + 1 :]
    state_col = header.index("STATE")
    restarts_end = header.index("RESTARTS") + len("RESTARTS")
    for row in rows:
        assert row[state_col - 1] == " "
        assert row[state_col] != " "
        assert row[restarts_end - 1] != " "  # right-aligned numbers end under the header
    assert rows[1][:restarts_end].endswith("12")


def test_hub_disabled_and_hub_filtered_out() -> None:
    with_null = _lines(render_status(_status(None, [_proc("el_serda", "running")]), color=False))
    assert "hub: disabled" in with_null
    filtered = _status(None, [_proc("el_serda", "running")])
    del filtered["hub"]
    lines = _lines(render_status(filtered, color=False))
    assert not any(line.startswith("hub") for line in lines)


def test_only_the_hub_asked_for_shows_no_bot_table() -> None:
    status = _status(_hub(), [_proc("el_serda", "running")])
    del status["bots"]
    lines = _lines(render_status(status, color=False))
    assert any(line.startswith("hub ") for line in lines)
    assert not any("bots running" in line or line == "no bots" for line in lines)


def test_no_bots() -> None:
    lines = _lines(render_status(_status(_hub()), color=False))
    assert "0/0 bots running" in lines
    assert "no bots" in lines


def test_reason_line_below_its_bot_wrapped_to_width() -> None:
    bots = [
        _proc("el_serda", "running"),
        _proc("morthy", "failed", reason=LONG_REASON),
        _proc("zed_bot", "running"),
    ]
    lines = _lines(render_status(_status(None, bots), color=False, width=80))
    start = next(i for i, line in enumerate(lines) if line.startswith("morthy"))
    assert lines[start + 1].startswith("    ↳ token revoked")
    reason_lines = []
    for line in lines[start + 1 :]:
        if line.startswith("zed_bot"):
            break
        reason_lines.append(line)
    assert len(reason_lines) >= 3
    assert all(line.startswith("      ") for line in reason_lines[1:])
    assert all(len(line) <= 80 for line in reason_lines)
    words = " ".join(line.replace("↳", "") for line in reason_lines).split()
    assert words == LONG_REASON.split()


def test_hub_reason_is_shown() -> None:
    hub = _hub(state="backoff", pid=None, reason="hub socket busy: another hub runs")
    lines = _lines(render_status(_status(hub), color=False))
    assert any("↳ hub socket busy" in line for line in lines)


@pytest.mark.parametrize("width", [70, 80, 100])
def test_long_fields_fit_the_width(width: int) -> None:
    hub = _hub(
        socket="/very/long/path/to/the/hub/socket/" + "d" * 80 + "/kissbot_hub.sock",
        last_exit="killed by SIGKILL after the stop timeout of 30 s",
        reason=LONG_REASON,
    )
    bots = [
        _proc("averyveryverylongchannelnam", "backoff", restarts=123, uptime_s=987654321.0),
        _proc(
            "el_serda",
            "failed",
            last_exit="killed by SIGKILL (watchdog: no ping for 90 s)",
            token_state="needs_reauth",
            reason=LONG_REASON,
        ),
        _proc("x" * 200, "running", pid=4194304, rss_bytes=1023 * 1024**3),
    ]
    status = _status(hub, bots)
    status["supervisor"]["version"] = "0.1.0+" + "g" * 100
    text = render_status(status, color=False, width=width)
    lines = _lines(text)
    assert all(len(line) <= width for line in lines), [ln for ln in lines if len(ln) > width]
    header = next(line for line in lines if line.startswith("CHANNEL"))
    shown = header.replace("LAST EXIT", "LAST_EXIT").split()
    # headers are never cut; those left out are said
    assert set(shown) <= {
        "CHANNEL",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "MEM",
        "LAST_EXIT",
        "TOKEN",
    }
    assert shown[:3] == ["CHANNEL", "STATE", "PID"]
    if len(shown) < 8:
        assert any("no room at" in line for line in lines)
    assert any(line.startswith("averyve") for line in lines)
    assert any("4194304" in line for line in lines)  # a PID is never cut
    assert any(line.startswith("xxxx") and ELLIPSIS in line for line in lines)
    # the colour codes must not change the visible width either
    colored = render_status(status, color=True, width=width)
    assert ANSI.sub("", colored) == text


@pytest.mark.parametrize(
    "bots",
    [
        [
            _proc("sixteen_chars_ok", "running", pid=98765, token_state="needs_reauth"),
            _proc("short", "stopped", last_exit="exit 1"),
        ],
        [
            _proc("twenty_one_chars_nick", "running", pid=98765, token_state="revoked"),
            _proc("short", "failed", last_exit="SIGKILL"),
        ],
    ],
)
def test_common_values_are_not_truncated_at_80(bots: list[dict[str, Any]]) -> None:
    text = render_status(_status(_hub(), bots), color=False)
    assert max(len(line) for line in _lines(text)) <= 80
    assert ELLIPSIS not in text
    for bot in bots:
        assert bot["channel"] in text
        assert bot["token_state"] in text


# --- colour --------------------------------------------------------------------

STATES = ("running", "starting", "stopping", "stopped", "backoff", "failed")


def test_no_escape_codes_without_color() -> None:
    bots = [_proc(f"bot_{state}", state) for state in STATES]
    text = render_status(_status(_hub(state="failed"), bots), color=False)
    assert "\x1b" not in text


@pytest.mark.parametrize(
    ("state", "code"),
    [
        ("running", "32"),
        ("starting", "33"),
        ("backoff", "33"),
        ("stopping", "33"),
        ("failed", "31"),
        ("stopped", "2"),
    ],
)
def test_state_colours(state: str, code: str) -> None:
    text = render_status(_status(None, [_proc("some_bot", state)]), color=True)
    row = next(line for line in text.split("\n") if line.startswith("some_bot"))
    assert f"\x1b[{code}m{state}\x1b[0m" in row


def test_hub_state_coloured() -> None:
    text = render_status(_status(_hub(state="failed")), color=True)
    hub = next(line for line in text.split("\n") if line.startswith("hub"))
    assert "\x1b[31mfailed\x1b[0m" in hub


class _Tty(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(
    ("tty", "env", "expected"),
    [
        (True, {"TERM": "xterm-256color"}, True),
        (True, {}, True),
        (False, {"TERM": "xterm-256color"}, False),
        (True, {"TERM": "xterm", "NO_COLOR": "1"}, False),
        (True, {"TERM": "xterm", "NO_COLOR": ""}, False),  # any value disables
        (True, {"TERM": "dumb"}, False),
    ],
)
def test_use_color(tty: bool, env: dict[str, str], expected: bool) -> None:
    assert use_color(_Tty(tty), env) is expected


def test_use_color_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(_Tty(True)) is True
    monkeypatch.setenv("NO_COLOR", "")
    assert use_color(_Tty(True)) is False


def test_use_color_on_a_closed_stream() -> None:
    assert use_color(io.StringIO(), {}) is False
    closed = io.StringIO()
    closed.close()
    assert use_color(closed, {}) is False


def test_terminal_escapes_from_a_process_never_reach_the_terminal() -> None:
    """A bot's reason or STATUS= text is its own: ESC, BEL and C1 controls are shown as ?."""
    hostile = "\x1b]0;owned\x07\x1b[2J\x9b31mred\x00line\nnext"
    bot = _proc("el_serda", "failed", reason=hostile, last_exit="exited 1\x1b[1A")
    text = render_status(_status(hub=_hub(status_text=hostile), bots=[bot]), color=False, width=120)
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in text)
    assert "?]0;owned??[2J?31mred?line next" in text
    event = {"time": 0, "name": "el_serda", "kind": "exited", "message": hostile}
    line = format_event(event, color=False)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line)


def test_progress_text_names_what_is_waited_for_within_the_width() -> None:
    one = progress_text("start", ["el_serda"], 1, 12.4, 65, 80)
    assert one == "start: waiting for el_serda to be ready... 12 s (max 65 s)"
    many = [f"channel_{i:03}" for i in range(60)]
    text = progress_text("restart", many[57:], 60, 3, 70, 120)
    assert text == (
        "restart: 57/60 done, waiting for channel_057, channel_058, channel_059 "
        "to be ready... 3 s (max 70 s)"
    )
    squeezed = progress_text("restart", many[57:], 60, 3, 70, 80)
    assert squeezed == "restart: 57/60 done, waiting for 3 to be ready... 3 s (max 70 s)"
    for width in (40, 60, 80, 120):
        line = progress_text("restart", many, 60, 3, 70, width)
        assert len(line) < width  # never wraps: it is redrawn in place
        assert line.startswith("restart: 0/60 done")
    assert " and 7 more to be ready" in progress_text("restart", many[:9], 60, 0, 70, 100)
    stop = progress_text("stop", ["el_serda"], 1, 0, 10, 80)
    assert stop == "stop: waiting for el_serda to stop... 0 s (max 10 s)"


def test_narrow_terminals_leave_columns_out_before_cutting_names_or_pids() -> None:
    bots = [
        _proc("a_pretty_long_channel_nm", "running", pid=1654321, token_state="valid"),
        _proc("el_serda", "failed", pid=None, last_exit="killed by SIGKILL", restarts=7),
    ]
    for width in (42, 60, 80, 120):
        text = render_status(_status(_hub(), bots), color=False, width=width)
        table = text.split("CHANNEL", 1)[1]
        assert all(len(line) <= width for line in _lines(text)), width
        assert "a_pretty_long_channel_nm running 1654321" in " ".join(table.split())
        assert ELLIPSIS not in table
    narrow = render_status(_status(_hub(), bots), color=False, width=60)
    assert "(UPTIME, MEM, LAST EXIT: no room at 60 columns;" in narrow
    wide = render_status(_status(_hub(), bots), color=False, width=120)
    assert "no room" not in wide


def test_a_terminal_without_utf8_gets_ascii_of_the_same_width() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="latin-1")
    fit_stream(stream)
    status = _status(_hub(reason="token revoked"), [_proc("x" * 30, "running")])
    text = render_status(status, color=False, width=60)
    stream.write(text + "émile ✓\n")
    stream.flush()
    written = raw.getvalue().decode("latin-1")
    assert written.startswith("== KissBot supervisor ==")
    # latin-1 has "·": kept; the others become ASCII of the same width.
    assert written.splitlines()[:-1] == [
        line.replace("═", "=").replace("…", "~").replace("↳", ">") for line in text.splitlines()
    ]
    assert written.endswith("émile ?\n")  # latin-1 has é, not ✓
