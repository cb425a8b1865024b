"""``kissbotctl top`` on a pseudo-terminal against a real fleet (native, demo bots).

It runs under ``sh -c '...; echo top exited $?; stty -a'`` so that each test
reads the exit code and the terminal's modes after it, as the user's shell
would find them. Long intervals make a redraw that follows a key or a resize
come from that key or resize, not from the timer.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from linewatch import wait_until

from .conftest import StartFleet
from .harness import KISSBOTCTL, TIMEOUT, Supervisor, children_of, fleet_config
from .ptyexpect import CTRL_C, PtyProgram
from .test_shell import term_env

KEYS_LINE = "q quit · sort:"
AFTER = 'echo "top exited $?"; stty -a'
# The shell runs a trap for Ctrl-C rather than die of it (a shell with job control would
# not get it at all); a trap, unlike an ignored signal, is not inherited by top.
BEFORE = "trap true INT"


@pytest.fixture
def fleet(start_fleet: StartFleet) -> Supervisor:
    """The hub, a running bot, a bot stopped on purpose and one parked (it exits at start)."""
    doc = fleet_config(
        ["el_serda", "morthy", "broken_one"],
        hub=True,
        per_channel={"broken_one": ["--exit-code", "1"]},
    )
    sup = start_fleet(doc)
    for name in ("hub", "el_serda", "morthy"):
        sup.wait_for(rf"{name}: ready")
    assert sup.ctl("stop", "morthy").returncode == 0
    wait_until(lambda: sup.bot("broken_one")["state"] == "failed", what="broken_one parked")
    return sup


@pytest.fixture
def terminals() -> Iterator[list[PtyProgram]]:
    opened: list[PtyProgram] = []
    yield opened
    for term in opened:
        term.close()


def top(
    sup: Supervisor,
    home: Path,
    terminals: list[PtyProgram],
    *args: str,
    columns: int = 100,
) -> PtyProgram:
    argv = [KISSBOTCTL, "--socket", str(sup.control), "top", *args]
    term = PtyProgram(
        ["sh", "-c", f'{BEFORE}; "$@"; {AFTER}', "sh", *argv], term_env(home), columns=columns
    )
    terminals.append(term)
    return term


def last_frame(term: PtyProgram, since: int) -> str:
    """The text of the last complete frame drawn after ``since``."""
    term.expect(KEYS_LINE, since)
    text = term.text[since:]
    end = text.rindex(KEYS_LINE)
    return text[text.rindex("NAME", 0, end) : end]


def assert_terminal_restored(term: PtyProgram, code: int) -> None:
    # stty -a ends with the local modes' line, whose last flag is [-]extproc.
    modes = term.expect(rf"(?s)top exited {code}\n.*extproc").group()
    assert re.search(r"(?<![-\w])icanon\b", modes), modes  # lines again, not keys
    assert re.search(r"(?<![-\w])echo\b", modes), modes
    assert term.wait() == 0
    raw = term.raw
    assert raw.rindex("\x1b[?1049l") > raw.rindex("\x1b[?1049h")  # the shell's screen back
    assert raw.rindex("\x1b[?25h") > raw.rindex("\x1b[?25l")  # the cursor shown


def test_top_shows_the_fleet_and_q_gives_the_terminal_back(
    fleet: Supervisor, tmp_path: Path, terminals: list[PtyProgram]
) -> None:
    term = top(fleet, tmp_path, terminals, "--interval", "0.3")
    # The CPU column has figures from the second reading on.
    row = r"el_serda +running +\d+ +\d+\.\d +\d+(\.\d)?[BKMG] +0 +\d\d:\d\d:\d\d"
    term.expect(row)
    term.expect(r"3 bots: 1 failed · 1 stopped · 1 running · hub running")
    term.expect(r"all: CPU \d+\.\d% · memory \d")
    frame = last_frame(term, 0)
    names = re.findall(r"^(\S+) +(?:running|failed|stopped)", frame, re.M)
    assert names == ["hub", "broken_one", "morthy", "el_serda"]  # the troubled first
    assert re.search(r"^broken_one +failed +- +- +- +\d+ +-", frame, re.M)
    term.send("q")
    assert_terminal_restored(term, 0)


def test_keys_sort_at_once_and_a_resize_redraws_at_the_new_size(
    fleet: Supervisor, tmp_path: Path, terminals: list[PtyProgram]
) -> None:
    # 60 s between readings: every redraw below comes from the key or the resize.
    term = top(fleet, tmp_path, terminals, "--interval", "60", "--sort", "restarts")
    term.expect(r"by restarts")
    term.expect(KEYS_LINE)  # the first frame drawn whole: what follows the mark is the next
    mark = term.mark()
    term.send("n")
    frame = last_frame(term, mark)
    assert re.findall(r"^(\S+) +(?:running|failed|stopped)", frame, re.M) == [
        "hub",
        "broken_one",
        "el_serda",
        "morthy",
    ]
    assert re.search(r"^NAME +STATE +PID +CPU% +MEM +RESTARTS +UPTIME", frame, re.M)
    mark = term.mark()
    term.resize(24, 48)
    frame = last_frame(term, mark)
    # At 48 columns PID and UPTIME are left out, names kept whole.
    assert re.search(r"^NAME +STATE +CPU% +MEM +RESTARTS\s*$", frame, re.M), frame
    assert "broken_one" in frame
    term.send(CTRL_C)
    assert_terminal_restored(term, 130)


def test_sigterm_also_gives_the_terminal_back(
    fleet: Supervisor, tmp_path: Path, terminals: list[PtyProgram]
) -> None:
    term = top(fleet, tmp_path, terminals, "--interval", "60")
    term.expect(KEYS_LINE)  # drawn: the terminal is in its keys mode
    (pid,) = children_of(term.proc.pid)  # kissbotctl, under the sh
    os.kill(pid, signal.SIGTERM)
    assert_terminal_restored(term, 143)


def test_off_a_terminal_top_prints_one_frame(fleet: Supervisor) -> None:
    done = subprocess.run(
        [KISSBOTCTL, "--socket", str(fleet.control), "top", "--interval", "0.2"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert done.stdout.count("NAME") == 1
    assert re.search(r"^el_serda +running +\d+ +\d+\.\d ", done.stdout, re.M)
    assert KEYS_LINE not in done.stdout


def test_top_without_a_supervisor_says_so_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [KISSBOTCTL, "--socket", str(tmp_path / "none.sock"), "top"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("kissbotctl: ")
    assert done.stderr.count("\n") == 1
