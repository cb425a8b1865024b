"""The interactive shell on a pseudo-terminal: ``kissbotctl shell`` and the supervisor's prompt.

Keys are typed into the pty as a user types them (Tab, arrow up, Ctrl-C,
Ctrl-D) and every step waits for text on the screen. The supervisor is the
installed one with a demo fleet; its own prompt is started by running it on
the pty without ``--non-interactive``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from linewatch import wait_until

from .conftest import StartFleet
from .harness import (
    KISSBOTCTL,
    SUPERVISOR,
    TIMEOUT,
    Supervisor,
    children_of,
    fleet_config,
    pid_alive,
    write_config,
)
from .ptyexpect import CTRL_C, CTRL_D, TAB, UP, PtyProgram

PROMPT = "kissbot> "
SUPERVISOR_PROMPT = "kissbot-supervisor> "


def term_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KISSBOT_CONTROL_SOCKET", "NO_COLOR", "COLUMNS", "INPUTRC"}
    }
    # No user readline config; history under the test's own state dir.
    env.update(TERM="xterm", INPUTRC="/dev/null", HOME=str(home), XDG_STATE_HOME=str(home / "st"))
    return env


@pytest.fixture
def fleet(start_fleet: StartFleet) -> Supervisor:
    sup = start_fleet(fleet_config(["el_serda", "morthy"], hub=True))
    for name in ("hub", "el_serda", "morthy"):
        sup.wait_for(rf"{name}: ready")
    return sup


@pytest.fixture
def terminals() -> Iterator[list[PtyProgram]]:
    opened: list[PtyProgram] = []
    yield opened
    for term in opened:
        term.close()


def shell(sup: Supervisor, home: Path, terminals: list[PtyProgram]) -> PtyProgram:
    term = PtyProgram([KISSBOTCTL, "--socket", str(sup.control), "shell"], term_env(home))
    terminals.append(term)
    term.expect(PROMPT)
    return term


# select(2) and its kin, on x86-64: readline waits for a key in select().
WAITING_SYSCALLS = {"7", "23", "270", "271"}  # poll, select, pselect6, ppoll


def waiting_for_keys(pid: int) -> None:
    """Until ``pid`` is back in readline's wait for the next key.

    A SIGINT that lands while CPython's readline is still handling the last key
    (after its echo, before it waits again) is acted on only at the next key:
    CPython checks signals when that wait is interrupted. A person's Ctrl-C
    never comes within those microseconds of a keystroke; a test's does.
    """
    wait_until(
        lambda: Path(f"/proc/{pid}/syscall").read_text().split()[0] in WAITING_SYSCALLS,
        what="the shell waits for a key",
    )


def run(term: PtyProgram, keys: str, pattern: str, prompt: str = PROMPT) -> str:
    """Type ``keys``; wait for ``pattern`` and then the next prompt; the output in between."""
    mark = term.mark()
    term.send(keys)
    found = term.expect(pattern, since=mark)
    term.expect(prompt, since=found.end())
    return term.text[mark:]


def test_commands_completion_ctrl_c_and_ctrl_d(
    fleet: Supervisor, tmp_path: Path, terminals: list[PtyProgram]
) -> None:
    term = shell(fleet, tmp_path, terminals)
    out = run(term, "status\r", r"2/2 bots running")
    assert "el_serda" in out
    # Tab completes a command: "hub-s" alone would be an unknown command.
    out = run(term, "hub-s" + TAB + "\r", r"● hub · running since")  # its detail
    assert "hub-status" in out
    assert "unknown command" not in out
    # ... and a channel name after a command that takes names.
    before = fleet.bot("el_serda")["pid"]
    run(term, "restart el_" + TAB + "\r", r"el_serda: restarted \(PID \d+\)")
    assert fleet.bot("el_serda")["pid"] != before
    out = run(term, "frobnicate\r", r"unknown command 'frobnicate'; type help")
    out = run(term, "help\r", r"quit, exit, Ctrl-D +leave the shell")
    assert "hub-restart" in out
    assert "restart-all" in out

    # Ctrl-C clears the line being typed; the shell lives on.
    mark = term.mark()
    term.send("garbage")
    term.expect("garbage", since=mark)
    waiting_for_keys(term.proc.pid)
    term.send(CTRL_C)
    term.expect(PROMPT, since=mark + len("garbage"))
    out = run(term, "status morthy\r", r"● morthy · running since")
    assert "garbage" not in out
    assert term.proc.poll() is None

    # Ctrl-C also ends a command that would run for ever, back to the prompt.
    mark = term.mark()
    term.send("events\r")
    term.expect("events\n", since=mark)
    term.send(CTRL_C)
    term.expect(PROMPT, since=mark + len("events"))

    term.send(CTRL_D)
    assert term.wait() == 0
    # Leaving the shell left the supervisor alone.
    assert fleet.proc.poll() is None
    assert fleet.bot("morthy")["state"] == "running"


def test_history_is_kept_across_sessions(
    fleet: Supervisor, tmp_path: Path, terminals: list[PtyProgram]
) -> None:
    history = tmp_path / "st" / "kissbot-supervisor" / "history"
    history.parent.mkdir(parents=True)
    history.write_text("".join(f"old command {i}\n" for i in range(1500)))

    first = shell(fleet, tmp_path, terminals)
    run(first, "status morthy\r", r"● morthy · running since")
    first.send("quit\r")
    assert first.wait() == 0
    lines = history.read_text().splitlines()
    assert lines[-2:] == ["status morthy", "quit"]  # as bash keeps "exit"
    assert len(lines) <= 1002  # bounded: cut to the last 1000 at start, then appended

    second = shell(fleet, tmp_path, terminals)
    out = run(second, UP + UP + "\r", r"● morthy · running since")
    assert "status morthy" in out
    second.send(CTRL_D)
    assert second.wait() == 0


def supervisor_on_a_terminal(
    tmp_path: Path, terminals: list[PtyProgram], channels: list[str]
) -> tuple[PtyProgram, Path]:
    write_config(tmp_path, fleet_config(channels, hub=True))
    control = tmp_path / "run" / "control.sock"
    argv = [
        SUPERVISOR,
        "--workdir",
        str(tmp_path),
        "--config",
        "config/config.yaml",
        "--runtime-dir",
        str(control.parent),
    ]
    term = PtyProgram(argv, term_env(tmp_path))
    terminals.append(term)
    term.expect(SUPERVISOR_PROMPT)
    for name in ("hub", *channels):
        term.expect(rf"{name}: ready")
    return term, control


def status_of(control: Path) -> dict[str, object]:
    result = subprocess.run(
        [KISSBOTCTL, "--socket", str(control), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    status: dict[str, object] = json.loads(result.stdout)
    return status


def pids_of(status: dict[str, object]) -> list[int]:
    bots = status["bots"]
    hub = status["hub"]
    assert isinstance(bots, list)
    assert isinstance(hub, dict)
    return [b["pid"] for b in bots] + [hub["pid"]]


def test_the_supervisors_own_prompt(tmp_path: Path, terminals: list[PtyProgram]) -> None:
    term, control = supervisor_on_a_terminal(tmp_path, terminals, ["el_serda", "morthy"])
    run(term, "status\r", r"2/2 bots running", SUPERVISOR_PROMPT)

    # Supervision goes on while the prompt waits for a line nobody types.
    mark = term.mark()
    term.send("sta")  # half a command on the line
    term.expect("sta", since=mark)
    before = pids_of(status_of(control))
    os.kill(before[0], signal.SIGKILL)
    term.expect(r"el_serda: killed by SIGKILL", since=mark)
    ready = term.expect(r"el_serda: ready", since=mark)
    after = pids_of(status_of(control))
    assert after[0] != before[0]
    assert after[1:] == before[1:]
    # The prompt is drawn again under the log lines, with what was typed.
    term.expect(SUPERVISOR_PROMPT + "sta", since=ready.end())
    run(term, "tus el_serda\r", r"● el_serda · running since", SUPERVISOR_PROMPT)

    # quit in the supervisor's own prompt stops the supervisor and the fleet.
    mark = term.mark()
    term.send("quit\r")
    term.expect(r"stopping the supervisor and every process", since=mark)
    term.expect(r"supervisor: every process has stopped", since=mark)
    assert term.wait() == 0
    wait_until(lambda: not any(pid_alive(p) for p in after), what="the fleet gone")
    assert not control.exists()


def prompt_of(supervisor_pid: int) -> int:
    """The PID of the supervisor's prompt: its child running ``kissbotctl shell``."""
    for pid in children_of(supervisor_pid):
        with contextlib.suppress(OSError):
            if b"shell" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                return pid
    raise AssertionError(f"no prompt among the children of PID {supervisor_pid}")


def test_ctrl_c_in_the_supervisors_prompt_leaves_the_fleet_running(
    tmp_path: Path, terminals: list[PtyProgram]
) -> None:
    term, control = supervisor_on_a_terminal(tmp_path, terminals, ["only_bot"])
    pids = pids_of(status_of(control))
    prompt = prompt_of(term.proc.pid)
    start = term.mark()

    # Ctrl-C on a half-typed line clears it. The terminal sends it to its whole
    # foreground group, the supervisor included: the fleet goes on.
    mark = term.mark()
    term.send("garbage")
    term.expect("garbage", since=mark)
    waiting_for_keys(prompt)
    term.send(CTRL_C)
    term.expect(SUPERVISOR_PROMPT, since=mark + len("garbage"))
    out = run(term, "status\r", r"1/1 bot running", SUPERVISOR_PROMPT)
    assert "garbage" not in out

    # At an empty line, it says how to stop the fleet instead.
    mark = term.mark()
    waiting_for_keys(prompt)
    term.send(CTRL_C)
    term.expect(r"type quit to stop the supervisor and every process", since=mark)
    term.expect(SUPERVISOR_PROMPT, since=mark)

    # It ends a command that runs until Ctrl-C (its help says so), back to the prompt.
    mark = term.mark()
    term.send("events\r")
    term.expect("events\n", since=mark)
    term.send(CTRL_C)
    term.expect(SUPERVISOR_PROMPT, since=mark + len("events"))
    run(term, "status\r", r"1/1 bot running", SUPERVISOR_PROMPT)
    assert pids_of(status_of(control)) == pids
    assert "stopping bots" not in term.text[start:]

    # quit is the one way to stop the fleet from the prompt.
    mark = term.mark()
    term.send("quit\r")
    term.expect(r"supervisor: stopping bots, then the hub", since=mark)
    assert term.wait() == 0
    wait_until(lambda: not any(pid_alive(p) for p in pids), what="the fleet gone")


def test_a_prompt_that_ends_is_reaped_and_ctrl_c_stops_again(
    tmp_path: Path, terminals: list[PtyProgram]
) -> None:
    term, control = supervisor_on_a_terminal(tmp_path, terminals, ["only_bot"])
    prompt = prompt_of(term.proc.pid)
    os.kill(prompt, signal.SIGHUP)  # what a closed terminal sends it
    # Reaped by the supervisor, not left a zombie for its whole life.
    wait_until(lambda: not Path(f"/proc/{prompt}").exists(), what="the prompt reaped")
    assert pids_of(status_of(control))  # the fleet goes on
    # No prompt to leave it to any more: Ctrl-C stops the supervisor, as without one.
    mark = term.mark()
    term.send(CTRL_C)
    term.expect(r"supervisor: stopped", since=mark)
    assert term.wait() == 0


def test_ctrl_c_without_a_prompt_stops_the_supervisor(
    tmp_path: Path, terminals: list[PtyProgram]
) -> None:
    write_config(tmp_path, fleet_config(["quiet_bot"]))
    argv = [
        SUPERVISOR,
        "--workdir",
        str(tmp_path),
        "--config",
        "config/config.yaml",
        "--runtime-dir",
        str(tmp_path / "run"),
        "--non-interactive",
    ]
    term = PtyProgram(argv, term_env(tmp_path))
    terminals.append(term)
    term.expect(r"quiet_bot: ready")
    mark = term.mark()
    term.send(CTRL_C)  # no prompt to leave it to: the operator stops the supervisor
    term.expect(r"supervisor: stopping bots, then the hub", since=mark)
    term.expect(r"supervisor: stopped", since=mark)
    assert term.wait() == 0
    assert SUPERVISOR_PROMPT not in term.text


def test_no_prompt_with_non_interactive(tmp_path: Path, terminals: list[PtyProgram]) -> None:
    write_config(tmp_path, fleet_config(["quiet_bot"]))
    argv = [
        SUPERVISOR,
        "--workdir",
        str(tmp_path),
        "--config",
        "config/config.yaml",
        "--runtime-dir",
        str(tmp_path / "run"),
        "--non-interactive",
    ]
    term = PtyProgram(argv, term_env(tmp_path))
    terminals.append(term)
    ready = term.expect(r"quiet_bot: ready")
    term.proc.send_signal(signal.SIGTERM)
    assert term.wait() == 0
    assert SUPERVISOR_PROMPT not in term.text
    assert ready
