"""Triage at a glance: ``status --state``, the per-state counts, ``--sort state``."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from kissbot_supervisor.cli.ctl import main
from kissbot_supervisor.cli.render import fit_stream, render_status
from kissbot_supervisor.core import Phase
from kissbot_supervisor.status import (
    STATES,
    TROUBLE_ORDER,
    UnknownStateError,
    filter_states,
    parse_states,
    state_counts,
    troubled_first,
)

from .test_render import _hub, _lines, _proc, _status

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def fleet() -> dict[str, Any]:
    """Sixty bots as an operator finds them: 57 fine, two in backoff, one failed."""
    bots = [_proc(f"bot_{i:02d}", "running") for i in range(60)]
    bots[7] = _proc("bot_07", "backoff", restarts=3, last_exit="exited 1")
    bots[31] = _proc("bot_31", "failed", restarts=5, last_exit="exited 2")
    bots[44] = _proc("bot_44", "backoff", restarts=1, last_exit="killed by SIGKILL")
    return _status(_hub(), bots)


def test_the_states_are_the_cores() -> None:
    assert set(STATES) == {str(p) for p in Phase}
    assert set(TROUBLE_ORDER) == set(STATES)


@pytest.mark.parametrize(
    ("text", "states"),
    [
        ("failed", ("failed",)),
        ("Failed,BACKOFF", ("failed", "backoff")),
        (" failed , backoff,failed ", ("failed", "backoff")),
    ],
)
def test_parse_states_any_case_each_once(text: str, states: tuple[str, ...]) -> None:
    assert parse_states(text) == states


@pytest.mark.parametrize("text", ["runing", "failed,crashed", "", ","])
def test_an_unknown_state_names_the_valid_ones(text: str) -> None:
    with pytest.raises(UnknownStateError) as caught:
        parse_states(text)
    message = str(caught.value)
    assert message.endswith("the states are " + ", ".join(STATES))
    if text == "runing":
        assert "'runing' (did you mean running?)" in message


def test_filter_states_keeps_only_those_and_drops_the_hub_otherwise() -> None:
    status = fleet()
    shown = filter_states(status, ["failed", "backoff"])
    assert [b["channel"] for b in shown["bots"]] == ["bot_07", "bot_31", "bot_44"]
    assert "hub" not in shown  # running: not asked for
    assert filter_states(status, ["running"])["hub"] is status["hub"]
    assert len(status["bots"]) == 60  # a copy: the original is untouched
    only_hub = {k: v for k, v in status.items() if k != "bots"}
    assert "bots" not in filter_states(only_hub, ["failed"])


def test_state_counts_in_order_and_an_unknown_state_last() -> None:
    procs = [{"state": s} for s in ("failed", "running", "zombie", "running", "backoff")]
    assert list(state_counts(procs).items()) == [
        ("running", 2),
        ("backoff", 1),
        ("failed", 1),
        ("zombie", 1),
    ]


def test_troubled_first_keeps_config_order_within_a_state() -> None:
    status = fleet()
    status["bots"].insert(0, _proc("quiet", "stopped", want=False))
    ordered = [b["channel"] for b in troubled_first(status)["bots"]]
    assert ordered[:4] == ["bot_31", "bot_07", "bot_44", "quiet"]
    assert ordered[4:] == [f"bot_{i:02d}" for i in range(60) if i not in (7, 31, 44)]


def test_the_header_counts_each_state() -> None:
    lines = _lines(render_status(fleet(), color=False))
    assert lines[2] == "57/60 bots running · 2 backoff · 1 failed"


def test_the_header_counts_wrap_between_pieces_on_a_narrow_terminal() -> None:
    status = fleet()
    status["bots"][1] = _proc("bot_01", "starting")
    status["bots"][2] = _proc("bot_02", "stopped", want=False)
    lines = _lines(render_status(status, color=False, width=40))
    start = lines.index("55/60 bots running · 1 starting")
    assert lines[start + 1] == "2 backoff · 1 failed · 1 stopped"


def test_the_counts_are_coloured_as_the_states() -> None:
    line = _lines(render_status(fleet(), color=True))[2]
    assert "\x1b[33m2 backoff\x1b[0m" in line
    assert "\x1b[31m1 failed\x1b[0m" in line
    assert ANSI.sub("", line) == "57/60 bots running · 2 backoff · 1 failed"


def test_state_filter_lists_the_few_and_the_header_counts_all() -> None:
    text = render_status(fleet(), color=False, states=("failed", "backoff"))
    lines = _lines(text)
    assert lines[2] == "57/60 bots running · 2 backoff · 1 failed"
    header = next(i for i, line in enumerate(lines) if line.startswith("CHANNEL"))
    assert [line.split()[0] for line in lines[header + 1 :]] == ["bot_07", "bot_31", "bot_44"]
    assert not any(line.startswith("hub ") for line in lines)


def test_state_filter_matching_nothing_says_so() -> None:
    lines = _lines(render_status(fleet(), color=False, states=("stopping", "stopped")))
    assert lines[-1] == "no bots stopping or stopped"


def test_the_counts_fall_back_to_ascii() -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")  # latin-1 has "·"
    fit_stream(out)
    out.write(render_status(fleet(), color=False))
    out.flush()
    assert "57/60 bots running | 2 backoff | 1 failed\n" in raw.getvalue().decode("ascii")


def test_an_unknown_state_is_a_usage_error_naming_the_states(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["status", "--state", "failed,crashd"]) == 2
    err = capsys.readouterr().err
    assert "unknown state 'crashd' (did you mean crashed" not in err  # no such state
    assert "unknown state 'crashd'" in err
    assert "the states are running, starting, stopping, backoff, failed, stopped" in err


def test_the_flags_are_in_the_man_page() -> None:
    from kissbot_supervisor.cli.manpage import ctl_page

    page = ctl_page()
    assert "\\fB\\-\\-state\\fR \\fISTATE[,STATE...]\\fR" in page
    assert "\\fB\\-\\-sort\\fR \\fIORDER\\fR" in page
