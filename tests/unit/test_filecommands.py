"""The pure parts of KissBot's file interfaces: parsing, and the old supervisor's strings.

The reply strings are checked against the entries that :func:`commands.result`
really produces for core states, so a change on either side shows here.
"""

from __future__ import annotations

import pytest

from kissbot_supervisor import core
from kissbot_supervisor.core.commands import Before, result
from kissbot_supervisor.kissbot.filecommands import (
    UNKNOWN_COMMAND,
    Broadcast,
    bot_states,
    channel_of,
    inbox_line,
    parse_broadcasts,
    parse_command,
    relay_targets,
    reply_for,
    state_word,
    status_reply,
)

Phase = core.Phase
CHANNELS = ("el_serda", "other_chan")


def proc(name: str, phase: core.Phase, pid: int | None, **kw: object) -> core.Proc:
    spec = core.ProcessSpec(name=name, argv=("bot",), ready="notify")
    p = core.Proc(spec=spec, phase=phase, pid=pid)
    for key, value in kw.items():
        setattr(p, key, value)
    return p


def answer(cmd: str, name: str, before: Before, after: core.Proc | None) -> str:
    """The reply string for a command whose process went from ``before`` to ``after``."""
    response = {"ok": True, "results": [result(cmd, name, after, before)]}
    return reply_for(cmd, name, response)


# --- commands -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        (b"status", ("status", "")),
        (b"status\n", ("status", "")),
        (b"  start   El_Serda \r\n", ("start", "El_Serda")),
        (b"stop el_serda", ("stop", "el_serda")),
        (b"restart el_serda\n", ("restart", "el_serda")),
    ],
)
def test_commands_are_parsed(data: bytes, parsed: tuple[str, str]) -> None:
    assert parse_command(data) == parsed


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n",
        b"status now",
        b"start",
        b"start a b",
        b"launch el_serda",
        b"START el_serda",
        b"\xff\xfe start el_serda",
        b"start\0el_serda",
    ],
)
def test_anything_else_is_an_unknown_command(data: bytes) -> None:
    assert parse_command(data) is None


def test_channels_are_case_insensitive_logins_and_only_bots() -> None:
    assert channel_of("El_SERDA", CHANNELS) == "el_serda"
    assert channel_of("nobody_here", CHANNELS) is None
    assert channel_of("hub", (*CHANNELS, "hub")) is None  # not a login, never a channel here
    assert channel_of("all", CHANNELS) is None
    assert channel_of("../el_serda", CHANNELS) is None
    assert channel_of("\u212aelvin_bot", ("kelvin_bot",)) is None  # KELVIN SIGN lowers to k


def test_start_replies() -> None:
    stopped = Before(Phase.STOPPED, None)
    assert (
        answer("start", "el_serda", stopped, proc("el_serda", Phase.RUNNING, 4321))
        == "SUCCESS: el_serda started (PID 4321)"
    )
    running = Before(Phase.RUNNING, 4321)
    assert (
        answer("start", "el_serda", running, proc("el_serda", Phase.RUNNING, 4321))
        == "ERROR: el_serda already running (PID 4321)"
    )
    for after in (
        proc("el_serda", Phase.BACKOFF, None, reason="exited 1"),
        proc("el_serda", Phase.FAILED, None, reason="parked"),
        proc("el_serda", Phase.STOPPED, None, want=True, blocked="token revoked"),
        proc("el_serda", Phase.STARTING, 99),  # still not ready when the wait ran out
    ):
        assert answer("start", "el_serda", stopped, after) == "ERROR: el_serda failed to start"


def test_stop_replies() -> None:
    running = Before(Phase.RUNNING, 4321)
    assert (
        answer("stop", "el_serda", running, proc("el_serda", Phase.STOPPED, None, want=False))
        == "SUCCESS: el_serda stopped (was PID 4321)"
    )
    stopped = Before(Phase.STOPPED, None)
    assert (
        answer("stop", "el_serda", stopped, proc("el_serda", Phase.STOPPED, None, want=False))
        == "ERROR: el_serda not running"
    )
    still = proc("el_serda", Phase.STOPPING, 4321, want=False)  # the wait ran out
    assert answer("stop", "el_serda", running, still) == "ERROR: el_serda failed to stop"


def test_restart_replies() -> None:
    running = Before(Phase.RUNNING, 4321)
    assert (
        answer("restart", "el_serda", running, proc("el_serda", Phase.RUNNING, 5555))
        == "SUCCESS: el_serda restarted (PID 5555)"
    )
    assert (
        answer("restart", "el_serda", running, proc("el_serda", Phase.BACKOFF, None))
        == "ERROR: el_serda failed to restart"
    )


def test_refused_or_removed_meanwhile_is_not_found() -> None:
    refused = {"ok": False, "error": "unknown process 'el_serda'"}
    assert reply_for("start", "el_serda", refused) == "ERROR: Channel 'el_serda' not found"
    removed = answer("stop", "el_serda", Before(Phase.RUNNING, 1), None)
    assert removed == "ERROR: Channel 'el_serda' not found"


def test_status_keeps_the_two_old_words() -> None:
    bots = [
        ("ready_bot", "running", 1234),
        ("starting_bot", "starting", 1235),  # alive: RUNNING, as the old supervisor said
        ("stopped_bot", "stopped", None),
        ("backoff_bot", "backoff", None),
        ("failed_bot", "failed", None),
        ("stopping_bot", "stopping", 1236),  # on its way out
        ("waiting_bot", "starting", None),  # waiting for the hub: no process yet
    ]
    assert status_reply(bots) == (
        "SUCCESS: ready_bot:RUNNING:1234 | starting_bot:RUNNING:1235 | stopped_bot:STOPPED:N/A"
        " | backoff_bot:STOPPED:N/A | failed_bot:STOPPED:N/A | stopping_bot:STOPPED:N/A"
        " | waiting_bot:STOPPED:N/A"
    )
    assert {state_word(p, pid) for _n, p, pid in bots} == {"RUNNING", "STOPPED"}
    assert UNKNOWN_COMMAND == "ERROR: Unknown command"


def test_bot_states_are_bots_only_in_config_order() -> None:
    procs = {
        "hub": proc("hub", Phase.RUNNING, 10),
        "zeta_bot": proc("zeta_bot", Phase.RUNNING, 11),
        "alpha_bot": proc("alpha_bot", Phase.STOPPED, None),
    }
    channels = ("zeta_bot", "alpha_bot", "not_spawned_yet")
    assert bot_states(channels, procs) == [
        ("zeta_bot", "running", 11),
        ("alpha_bot", "stopped", None),
    ]


# --- broadcasts -----------------------------------------------------------------


def test_a_broadcast_line_is_relayed_without_its_timestamp() -> None:
    good, bad = parse_broadcasts(b"1712345678|el_serda|Hello | everyone!\n")
    assert bad == []
    assert good == [Broadcast(1712345678.0, "el_serda", "Hello | everyone!")]
    assert inbox_line(good[0]) == "el_serda|Hello | everyone!\n"


def test_several_lines_and_malformed_ones_each_say_what_is_wrong() -> None:
    data = (
        b"1712345678.5|el_serda|first\r\n"
        b"\n"
        b"garbage\n"
        b"soon|el_serda|bad time\n"
        b"1712345678|../etc|bad source\n"
        b"1712345678|el_serda|   \n"
        b"1712345679|Other_Chan|second"
    )
    good, bad = parse_broadcasts(data)
    assert [(b.source, b.message) for b in good] == [
        ("el_serda", "first"),
        ("Other_Chan", "second"),
    ]
    assert len(bad) == 4
    assert bad[0] == "line 3 'garbage' has 0 '|' (expected UNIX_TS|SOURCE_CHANNEL|MESSAGE)"
    assert "UNIX_TS 'soon' is not a Unix time" in bad[1]
    assert "SOURCE_CHANNEL '../etc' is not a Twitch login" in bad[2]
    assert "the MESSAGE is empty" in bad[3]
    assert all(b.startswith("line ") for b in bad)


def test_a_file_that_is_not_utf8_is_dropped_whole() -> None:
    assert parse_broadcasts(b"1|el_serda|\xff\n") == ([], ["the file is not UTF-8 text"])


def test_an_overlong_message_is_refused() -> None:
    good, bad = parse_broadcasts(b"1|el_serda|" + b"x" * 2001)
    assert good == []
    assert "over 2000 characters" in bad[0]


def test_relay_goes_to_running_bots_except_the_source() -> None:
    bots = [
        ("el_serda", "running", 1),
        ("other_chan", "running", 2),
        ("young_bot", "starting", 3),
        ("down_bot", "stopped", None),
        ("parked_bot", "failed", None),
    ]
    assert relay_targets("El_Serda", bots) == ["other_chan", "young_bot"]
    assert relay_targets("not_ours", bots) == ["el_serda", "other_chan", "young_bot"]
