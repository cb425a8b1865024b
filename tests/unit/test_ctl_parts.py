"""Pure parts of kissbotctl: event lines, the shell's command words, its history path,
and the completion scripts' view of the parser."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kissbot_supervisor.cli.completion import completion_script, describe
from kissbot_supervisor.cli.ctl import COMPLETE_NAMES, NAME_COMMANDS, build_parser, main
from kissbot_supervisor.cli.render import format_event
from kissbot_supervisor.cli.shell import history_path, translate
from kissbot_supervisor.status import STATES

WHEN = time.mktime((2026, 11, 24, 1, 2, 3, 0, 0, -1))


def _event(kind: str, message: str, name: str = "el_serda") -> dict[str, object]:
    return {
        "time": WHEN,
        "name": name,
        "kind": kind,
        "message": message,
        "state": "running",
        "pid": 12,
        "restarts": 0,
    }


@pytest.mark.parametrize(
    ("kind", "message", "line"),
    [
        (
            "exited",
            "killed by SIGKILL; starting again",
            "2026-11-24 01:02:03 el_serda exited: killed by SIGKILL; starting again",
        ),
        ("started", "started (PID 12)", "2026-11-24 01:02:03 el_serda started (PID 12)"),
        ("ready", "ready", "2026-11-24 01:02:03 el_serda ready"),
        (
            "parked",
            "exited 1 5 times\nat start-up",
            "2026-11-24 01:02:03 el_serda parked: exited 1 5 times at start-up",
        ),
        ("", "something", "2026-11-24 01:02:03 el_serda something"),
    ],
)
def test_event_lines(kind: str, message: str, line: str) -> None:
    assert format_event(_event(kind, message), color=False) == line


def test_event_colour_is_on_the_kind_only() -> None:
    line = format_event(_event("exited", "killed by SIGKILL"), color=True)
    assert line == "2026-11-24 01:02:03 el_serda \x1b[33mexited\x1b[0m: killed by SIGKILL"
    ready = format_event(_event("ready", "ready"), color=True)
    assert ready.endswith("el_serda \x1b[32mready\x1b[0m")
    unknown = format_event(_event("command", "restart requested"), color=True)
    assert "\x1b" not in unknown


@pytest.mark.parametrize(
    ("words", "argv"),
    [
        (["start-all"], ["start", "all"]),
        (["stop-all"], ["stop", "all"]),
        (["restart-all"], ["restart", "all"]),
        (["hub-status"], ["status", "hub"]),
        (["hub-restart"], ["restart", "hub"]),
        (["restart", "el_serda"], ["restart", "el_serda"]),
        (["logs", "morthy", "-f"], ["logs", "morthy", "-f"]),
        (["completion", "bash"], None),  # not a shell command
        (["shell"], None),
        (["frobnicate"], None),
    ],
)
def test_shell_words_become_kissbotctl_argv(words: list[str], argv: list[str] | None) -> None:
    assert translate(words) == argv


def test_history_path(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert history_path({"XDG_STATE_HOME": str(state)}) == state / "kissbot-supervisor/history"
    default = Path.home() / ".local/state/kissbot-supervisor/history"
    assert history_path({}) == default
    assert history_path({"XDG_STATE_HOME": "relative/dir"}) == default  # the spec: ignore


def test_completion_follows_the_parser() -> None:
    top, commands = describe(build_parser())
    names = [c.name for c in commands]
    assert "__complete-names" not in names  # hidden
    assert {"status", "start", "events", "metrics", "shell", "completion", "logs"} <= set(names)
    assert "--socket" in top.path_options
    assert "--timeout" in top.value_options
    by_name = {c.name: c for c in commands}
    assert "--follow" in by_name["logs"].options
    assert "--journal-dir" not in by_name["logs"].options  # SUPPRESS-ed help
    assert by_name["completion"].choices == ["bash", "zsh"]
    # status --state takes a comma list of states, --sort one of its choices.
    assert by_name["status"].option_words["--state"] == list(STATES)
    assert by_name["status"].option_words["--sort"] == ["config", "name", "state"]
    # An option with fixed values offers them (top --sort).
    assert by_name["top"].option_words["--sort"] == ["state", "name", "cpu", "memory", "restarts"]
    assert "--interval" in by_name["top"].value_options
    assert {c.name for c in commands if c.names} == set(NAME_COMMANDS)
    for shell in ("bash", "zsh"):
        script = completion_script(shell, build_parser())
        assert "__complete-names" in script
        assert "--follow" in script


def test_a_mistyped_command_gets_the_closest_and_no_hidden_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["stats"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'stats'; did you mean status" in err
    assert COMPLETE_NAMES not in err
    assert main(["--help"]) == 0
    assert COMPLETE_NAMES not in capsys.readouterr().out
    _top, commands = describe(build_parser())
    assert COMPLETE_NAMES not in [c.name for c in commands]


def test_the_completion_scripts_names_command_still_parses(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # No supervisor there: quiet and successful, as completion needs.
    assert main(["--socket", str(tmp_path / "none.sock"), COMPLETE_NAMES, "start"]) == 0
    assert capsys.readouterr() == ("", "")


def test_rolling_is_a_restart_option_with_a_value_in_help_completion_and_man_page(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kissbot_supervisor.cli.manpage import ctl_page

    _, commands = describe(build_parser())
    by_name = {c.name: c for c in commands}
    assert "--rolling" in by_name["restart"].value_options  # its N is not taken for a name
    assert "--rolling" not in by_name["start"].options
    assert "--rolling" in completion_script("bash", build_parser())
    assert "\\fB\\-\\-rolling\\fR \\fIN\\fR" in ctl_page()
    assert build_parser().parse_args(["restart", "all", "--rolling", "5"]).rolling == 5
    for bad in ("0", "two"):
        assert main(["--socket", "/nonexistent", "restart", "all", "--rolling", bad]) == 2
        assert "--rolling" in capsys.readouterr().err
