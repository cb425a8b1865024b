"""Triage at a glance, against a real fleet with a bot that keeps failing:
``status --state``/``--sort``, the per-state counts, and their completion."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from .conftest import StartFleet
from .harness import KISSBOTCTL, TIMEOUT, Supervisor, fleet_config
from .test_ctl_cli import bash_complete, ctl, ctl_env, zsh_and_completion


@pytest.fixture
def troubled(start_fleet: StartFleet) -> Supervisor:
    """Two bots that run and, between them in the config, one parked for failing."""
    doc = fleet_config(
        ["alpha_one", "broken_bot", "beta_two"],
        per_channel={"broken_bot": ["--exit-code", "1"]},
        supervisor={"restart": {"delay_sec": 0.05, "give_up_after": 2}},
    )
    sup = start_fleet(doc)
    sup.wait_for(r"alpha_one: ready")
    sup.wait_for(r"beta_two: ready")
    sup.wait_for(r"broken_bot: exited 1 2 times")
    return sup


def test_status_state_filter_counts_and_sort(troubled: Supervisor) -> None:
    every = ctl(troubled, "status")
    assert every.returncode == 3
    assert "2/3 bots running · 1 failed" in every.stdout.splitlines()

    failed = ctl(troubled, "status", "--state", "FAILED,backoff")
    assert failed.returncode == 3, failed.stderr  # a wanted bot among those listed is down
    lines = failed.stdout.splitlines()
    assert "2/3 bots running · 1 failed" in lines  # the header counts them all
    header = next(i for i, line in enumerate(lines) if line.startswith("CHANNEL"))
    assert [line.split()[0] for line in lines[header + 1 :] if line[:1] != " "] == ["broken_bot"]

    running = ctl(troubled, "status", "--state", "running", "--json")
    assert running.returncode == 0, running.stderr  # every one listed runs
    assert [b["channel"] for b in json.loads(running.stdout)["bots"]] == ["alpha_one", "beta_two"]

    by_state = ctl(troubled, "status", "--sort", "state", "--json")
    channels = [b["channel"] for b in json.loads(by_state.stdout)["bots"]]
    assert channels == ["broken_bot", "alpha_one", "beta_two"]
    by_name = ctl(troubled, "status", "--sort", "name", "--json")
    channels = [b["channel"] for b in json.loads(by_name.stdout)["bots"]]
    assert channels == ["alpha_one", "beta_two", "broken_bot"]


def test_status_unknown_state_is_a_usage_error(troubled: Supervisor) -> None:
    result = ctl(troubled, "status", "--state", "failed,parked")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "unknown state 'parked'" in result.stderr
    assert "the states are running, starting, stopping, backoff, failed, stopped" in result.stderr


def test_state_completion(troubled: Supervisor) -> None:
    env = ctl_env(KISSBOT_CONTROL_SOCKET=str(troubled.control))
    script = subprocess.run(
        [KISSBOTCTL, "completion", "bash"], capture_output=True, text=True, check=True
    ).stdout
    assert bash_complete(script, [KISSBOTCTL, "status", "--state", "st"], env) == [
        "starting",
        "stopping",
        "stopped",
    ]
    words = [KISSBOTCTL, "status", "--state", "failed,b"]
    assert bash_complete(script, words, env) == ["failed,backoff"]
    assert bash_complete(script, [KISSBOTCTL, "status", "--sort", ""], env) == [
        "config",
        "name",
        "state",
    ]
    # The value of --state is not taken for the subcommand's NAME.
    words = [KISSBOTCTL, "status", "--state", "failed", "al"]
    assert bash_complete(script, words, env) == ["alpha_one", "all"]


def test_state_completion_zsh(troubled: Supervisor) -> None:
    zsh, script = zsh_and_completion()
    # Stand-ins for the completion-widget builtins: print what is offered, and what
    # compset -P '*,' leaves of PREFIX.
    program = (
        "source /dev/stdin; "
        'compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@"; }; '
        "compset() { PREFIX=${PREFIX##*,}; print -r -- prefix=$PREFIX; }; "
        'words=("$@"); CURRENT=$#; PREFIX=${words[CURRENT]}; _kissbotctl'
    )
    result = subprocess.run(
        [zsh, "-f", "-c", program, "zsh", KISSBOTCTL, "status", "--state", "failed,b"],
        input=script,
        env=ctl_env(KISSBOT_CONTROL_SOCKET=str(troubled.control)),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert result.stderr == ""
    out = result.stdout.split()
    assert out[0] == "prefix=b"
    assert out[1:] == ["running", "starting", "stopping", "backoff", "failed", "stopped"]


# --- status NAME: the detail view ----------------------------------------------------


def test_status_name_shows_the_detail_with_its_log(troubled: Supervisor) -> None:
    result = ctl(troubled, "status", "Broken_Bot", COLUMNS="300")  # the paths unwrapped
    assert result.returncode == 3, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"● broken_bot · failed since \S+ \S+ \(00:00:\d\d ago\)", lines[0])
    assert any(line.startswith("   Command: ") for line in lines)
    restarts = next(i for i, line in enumerate(lines) if line.startswith("  Restarts: "))
    assert lines[restarts].endswith("last exits, newest first:")
    assert re.fullmatch(r" {12}\S+ \S+  exited 1", lines[restarts + 1])
    assert f"       Log: {troubled.workdir}/logs/supervisor/broken_bot.log" in lines
    log = lines[lines.index("") + 1 :]
    assert 0 < len(log) <= 10
    assert any("fatal start-up error" in line for line in log)  # the bot's own words

    several = ctl(troubled, "status", "alpha_one", "hub", "-n", "2")
    assert several.returncode == 0, several.stderr
    heads = [line for line in several.stdout.splitlines() if line.startswith("● ")]
    assert [h.split()[1] for h in heads] == ["alpha_one"]  # this fleet has no hub

    alpha = ctl(troubled, "status", "alpha_one", "--lines", "1").stdout.splitlines()
    assert '    Status: "joined #alpha_one"' in alpha  # its own STATUS= text
    assert len(alpha) - alpha.index("") - 1 == 1


def test_status_name_with_a_state_that_does_not_match(troubled: Supervisor) -> None:
    result = ctl(troubled, "status", "broken_bot", "--state", "running")
    assert (result.returncode, result.stdout) == (0, "none of broken_bot is running\n")


def test_the_table_shows_the_bots_status_text(troubled: Supervisor) -> None:
    lines = ctl(troubled, "status", COLUMNS="160").stdout.splitlines()
    header = next(line for line in lines if line.startswith("CHANNEL"))
    assert header.split()[-1] == "STATUS"
    row = next(line for line in lines if line.startswith("alpha_one "))
    assert row.endswith(" joined #alpha_one")
