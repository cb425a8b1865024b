"""Triage at a glance, against a real fleet with a bot that keeps failing:
``status --state``/``--sort``, the per-state counts, and their completion."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from .conftest import StartFleet
from .harness import KISSBOTCTL, TIMEOUT, Supervisor, fleet_config
from .test_ctl_cli import bash_complete, ctl, ctl_env


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
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed (apt-get install zsh)")
    script = subprocess.run(
        [KISSBOTCTL, "completion", "zsh"], capture_output=True, text=True, check=True
    ).stdout
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
