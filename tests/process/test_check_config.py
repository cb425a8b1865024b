"""``kissbot-supervisor --check-config`` says what would fail in this directory.

A config can be valid where nothing can start: not the KissBot checkout (no
``main.py``, no ``eventsub_hub.py``), a program that is not installed, a token
that blocks every bot. The installed program is run as an operator would, on
real directories; it starts nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from kissbot_supervisor.daemon.preflight import directory_problems

from .harness import SUPERVISOR, TIMEOUT, write_config

NOBODY = 65534


def check(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SUPERVISOR, "--workdir", str(workdir), "--check-config"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def upstream(channels: list[str], **supervisor: Any) -> dict[str, Any]:
    """KissBot's own config, with the upstream commands (python3 main.py ...)."""
    return {
        "twitch": {"channels": channels},
        "bot": {"name": "serda_bot"},
        "supervisor": {"backend": "native", "hub": {"enabled": True}, **supervisor},
    }


def test_a_directory_that_is_not_the_kissbot_checkout(tmp_path: Path) -> None:
    write_config(tmp_path, upstream(["el_serda", "morthy"]))
    result = check(tmp_path)
    assert result.returncode == 1
    assert "config/config.yaml: OK, 2 channels" in result.stdout  # the config itself is fine
    assert result.stderr.splitlines() == [
        f"kissbot-supervisor: would fail: the hub: eventsub_hub.py is not in {tmp_path} (its "
        "working directory), so it would exit at once; is --workdir the KissBot checkout? "
        "(else set supervisor.hub.command)",
        f"kissbot-supervisor: would fail: 2 bots (el_serda, morthy): main.py is not in "
        f"{tmp_path} (its working directory), so it would exit at once; is --workdir the "
        "KissBot checkout? (else set supervisor.bot.command)",
    ]


def test_the_kissbot_checkout_checks_ok(tmp_path: Path) -> None:
    write_config(tmp_path, upstream(["el_serda"]))
    for script in ("main.py", "eventsub_hub.py"):
        (tmp_path / script).write_text("")
    result = check(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_program_that_is_not_installed(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        upstream(
            ["el_serda"],
            hub={"enabled": False},
            bot={"command": ["no_such_program_anywhere", "--channel", "{channel}"]},
        ),
    )
    result = check(tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        "kissbot-supervisor: would fail: el_serda: 'no_such_program_anywhere' is not an "
        "executable file (searched in PATH), so it would exit at once; is --workdir the "
        "KissBot checkout? (else set supervisor.bot.command)\n"
    )


def test_a_token_that_blocks_every_bot(tmp_path: Path) -> None:
    doc = upstream(["el_serda", "morthy"], hub={"enabled": False}, bot={"command": ["/bin/true"]})
    doc["twitch"]["tokens"] = {"serda_bot": {"access_token": "", "refresh_token": "r"}}
    write_config(tmp_path, doc)
    result = check(tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "kissbot-supervisor: would fail: 2 bots (el_serda, morthy): would not be started: "
        "bot token of serda_bot has an empty access_token"
    )


def test_directories_the_bots_user_cannot_write(tmp_path: Path) -> None:
    for name in ("pids", "logs"):
        (tmp_path / name).mkdir(mode=0o755)  # ours, not the bots' user's
    (tmp_path / "cache").mkdir(mode=0o777)
    os.chmod(tmp_path / "cache", 0o777)  # whatever the umask
    problems = directory_problems(tmp_path, (NOBODY, NOBODY))
    assert problems == [
        f"{tmp_path}/{name}/ is not writable by the bots' user (UID {NOBODY}): the bots "
        f"write there; chown or chmod it (ls -ld {tmp_path}/{name})"
        for name in ("pids", "logs")
    ]
    assert directory_problems(tmp_path, None) == []  # this user may write them all
