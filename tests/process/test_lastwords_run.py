"""LastWords runs a real journalctl stand-in from a real loop (backends/systemd/lastwords.py).

The systemd sandbox test (test_backend.py, the outage) reads a real journal;
these cover what a real journal cannot be made to do on demand: a journalctl
that hangs, that is missing, that fails.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kissbot_supervisor.backends.systemd import lastwords
from kissbot_supervisor.backends.systemd.lastwords import LastWords
from kissbot_supervisor.runtime.log import Log
from kissbot_supervisor.runtime.loop import Loop

# Answers "said by N" for the n-th _PID= it is asked about, in the n-th unit asked
# about (the tests' units and PIDs sort alike).
ANSWERS = f"""#!{sys.executable}
import json, sys
units = [a.split("=", 1)[1] for a in sys.argv if a.startswith("_SYSTEMD_UNIT=")]
pids = [a.split("=", 1)[1] for a in sys.argv if a.startswith("_PID=")]
for unit, pid in zip(units, pids):
    print(json.dumps({{"_PID": pid, "_SYSTEMD_UNIT": unit, "MESSAGE": "said by " + pid}}))
"""


def stand_in(tmp_path: Path, text: str) -> str:
    path = tmp_path / "journalctl"
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def into(done: dict[str, tuple[str, ...]], key: str) -> Callable[[tuple[str, ...]], None]:
    """A delivery that files the lines under ``key``."""
    return lambda lines: done.__setitem__(key, lines)


def run_until(loop: Loop, done: dict[str, tuple[str, ...]], count: int) -> None:
    while len(done) < count:
        loop.run_once()


def test_exits_held_together_are_read_in_one_run_each_with_its_own_lines(tmp_path: Path) -> None:
    loop, log = Loop(), io.StringIO()
    words = LastWords(loop, Log(log), stand_in(tmp_path, ANSWERS))
    done: dict[str, tuple[str, ...]] = {}
    try:
        for name, pid in (("a", 101), ("b", 202)):
            words.hold(
                name,
                f"kissbot-bot@{name}.service",
                pid,
                into(done, name),
            )
        run_until(loop, done, 2)
        assert done == {"a": ("said by 101",), "b": ("said by 202",)}
        assert words.child_pids() == set()  # reaped
        assert log.getvalue() == ""
    finally:
        words.close()
        loop.close()


def test_a_start_hands_the_held_exit_on_at_once(tmp_path: Path) -> None:
    loop = Loop()
    words = LastWords(loop, Log(io.StringIO()), stand_in(tmp_path, ANSWERS))
    done: list[tuple[str, ...]] = []
    try:
        words.hold("a", "kissbot-bot@a.service", 101, done.append)
        words.flush("a")
        assert done == [()]
    finally:
        words.close()
        loop.close()


def test_a_hung_journalctl_is_killed_and_the_exits_go_on_without_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lastwords, "TIMEOUT_SEC", 0.5)
    loop, log = Loop(), io.StringIO()
    words = LastWords(loop, Log(log), stand_in(tmp_path, "#!/bin/sh\nexec sleep 600\n"))
    done: dict[str, tuple[str, ...]] = {}
    try:
        words.hold("a", "kissbot-bot@a.service", 101, into(done, "a"))
        while not words.child_pids():
            loop.run_once()
        pid = next(iter(words.child_pids()))
        run_until(loop, done, 1)
        assert done == {"a": ()}
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # killed and reaped
        assert "gave no answer within 0.5 s" in log.getvalue()
    finally:
        words.close()
        loop.close()


def test_a_journalctl_that_cannot_run_is_said_once(tmp_path: Path) -> None:
    loop, log = Loop(), io.StringIO()
    missing = str(tmp_path / "no-such-journalctl")
    words = LastWords(loop, Log(log), missing)
    done: dict[str, tuple[str, ...]] = {}
    try:
        for round_ in range(2):
            words.hold(
                "a",
                "kissbot-bot@a.service",
                101 + round_,
                into(done, f"a{round_}"),
            )
            run_until(loop, done, round_ + 1)
        assert done == {"a0": (), "a1": ()}
        said = log.getvalue().splitlines()
        assert len(said) == 1
        assert "cannot read the units' last lines from the journal" in said[0]
        assert missing in said[0]
    finally:
        words.close()
        loop.close()


def test_a_flood_keeps_the_newest_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Entries come oldest first; what is over the cap is cut from the front.
    monkeypatch.setattr(lastwords, "MAX_OUTPUT", 4096)
    flood = """#!/bin/sh
i=0
id='"_PID":"101","_SYSTEMD_UNIT":"kissbot-bot@a.service"'
while [ $i -lt 3000 ]; do
  printf '{%s,"MESSAGE":"line %s of a flood"}\\n' "$id" $i; i=$((i+1))
done
printf '{%s,"MESSAGE":"the last words"}\\n' "$id"
"""
    loop = Loop()
    words = LastWords(loop, Log(io.StringIO()), stand_in(tmp_path, flood))
    done: dict[str, tuple[str, ...]] = {}
    try:
        words.hold("a", "kissbot-bot@a.service", 101, into(done, "a"))
        run_until(loop, done, 1)
        assert done["a"] == ("line 2998 of a flood", "line 2999 of a flood", "the last words")
    finally:
        words.close()
        loop.close()
