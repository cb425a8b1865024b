"""bot.preload's pure parts: which commands it applies to, what the fork server
imports, and what the supervisor believes of the fork server's messages."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kissbot_supervisor.backends.native.forkserver import (
    MAX_MESSAGE,
    MAX_WORDS,
    decode,
    encode,
    import_phase,
    shared_channels,
    words,
)
from kissbot_supervisor.backends.native.preload import (
    Broken,
    Program,
    Ready,
    check_ready,
    code_file,
    ksm_switched_off,
    python_program,
    read_reply,
    watched_dirs,
)
from kissbot_supervisor.backends.native.spawner import SpawnError
from kissbot_supervisor.config.settings import SettingValueError, module_names


@pytest.mark.parametrize(
    ("argv", "program"),
    [
        (["python3", "main.py", "--channel", "a"], Program("python3", "script", "main.py")),
        (
            ["kissbot-venv/bin/python", "main.py"],
            Program("kissbot-venv/bin/python", "script", "main.py"),
        ),
        (
            ["/usr/bin/python3.11", "bots/main.py"],
            Program("/usr/bin/python3.11", "script", "bots/main.py"),
        ),
        (["python", "-m", "kissbot.main", "--x"], Program("python", "module", "kissbot.main")),
    ],
)
def test_python_programs_preload_applies_to(argv: list[str], program: Program) -> None:
    assert python_program(argv) == program


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["sh", "-c", "exec python3 main.py"], "starts 'sh', not a Python interpreter"),
        (["node", "main.py"], "starts 'node'"),
        (["python3"], "not a Python interpreter"),
        ([], "starts 'nothing'"),
        (["python3", "-u", "main.py"], "runs python3 '-u': preload needs `PYTHON SCRIPT.py ARGS`"),
        (["python3", "-c", "import x"], "without interpreter options"),
        (["python3", "-m"], "runs python3 '-m'"),
        (["python3", "-m", "-x"], "runs python3 '-m'"),
        (["python3", "main"], "runs python3 'main'"),
        (["python3x", "main.py"], "not a Python interpreter"),
    ],
)
def test_commands_preload_cannot_apply_to_say_why(argv: list[str], why: str) -> None:
    found = python_program(argv)
    assert isinstance(found, str)
    assert why in found


def test_import_phase_is_the_top_level_imports_with_optional_ones_marked() -> None:
    source = """
import os, json
import yaml as y
from core.bot import KissBot
from . import sibling
from .x import y
from twitchAPI import *
try:
    import uvloop
except ImportError:
    import asyncio as uvloop
if __name__ == "__main__":
    import argparse
with open("x") as f:
    import sqlite3
import os

def main():
    import aiohttp

class C:
    import email
"""
    assert dict(import_phase(source)) == {
        "os": False,
        "json": False,
        "yaml": False,
        "core.bot": False,
        "core.bot.KissBot": True,  # may be a submodule: tried, not required
        "twitchAPI": False,
        "uvloop": True,
        "asyncio": True,
        "argparse": False,
        "sqlite3": False,
    }


def test_an_import_required_anywhere_is_required() -> None:
    source = "try:\n    import yaml\nexcept ImportError:\n    pass\nimport yaml\n"
    assert import_phase(source) == [("yaml", False)]


def test_a_program_that_does_not_parse_is_a_syntax_error() -> None:
    with pytest.raises(SyntaxError):
        import_phase("import (")


def test_messages_round_trip_and_junk_is_refused() -> None:
    message = {"start": {"argv": ["python3", "main.py"], "env": {"A": "é"}}}
    assert decode(encode(message)) == message
    for junk in (b"", b"\xff", b"[1]", b"{}", b'{"a": 1, "b": 2}', b"not json"):
        with pytest.raises(ValueError, match=r"JSON|one key"):
            decode(junk)
    with pytest.raises(ValueError, match="at most"):
        encode({"env": "x" * MAX_MESSAGE})


def test_words_from_the_fork_server_are_one_short_line() -> None:
    assert words("importing x failed:\nboom\x1b[31m") == "importing x failed: boom [31m"
    long = words("x" * 10_000)
    assert len(long) == MAX_WORDS
    assert long.endswith("...")


def test_a_ready_report_is_checked_field_by_field() -> None:
    report = {"seconds": 1.5, "imported": ["a", "b"], "skipped": [], "dirs": ["/w/bot"]}
    assert check_ready(report) == Ready(1.5, 2, ("/w/bot",), None)
    assert check_ready({**report, "merge": ""}).merge == ""
    assert check_ready({**report, "merge": "no\nway"}).merge == "no way"  # one line
    bad: object
    for bad in (
        None,
        [],
        {"imported": [], "dirs": []},
        {"seconds": "1", "imported": [], "dirs": []},
        {"seconds": 1, "imported": [], "dirs": [1]},
        {"seconds": 1, "imported": [], "dirs": "/"},
        {"seconds": 1, "imported": [], "dirs": [], "merge": True},
    ):
        with pytest.raises(ValueError, match="a ready report"):
            check_ready(bad)


def test_ksm_is_off_when_its_switch_says_0_or_is_missing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert ksm_switched_off(run)  # a kernel without KSM
    for value, off in (("0\n", True), ("1\n", False), ("2\n", False)):
        run.write_text(value)
        assert ksm_switched_off(run) is off


def test_only_directories_inside_the_workdir_are_watched() -> None:
    workdir = Path("/srv/kissbot")
    dirs = [
        "/srv/kissbot",
        "/srv/kissbot/core",
        "/srv/kissbot/../../etc",
        "/srv/kissbot-other",
        "/etc",
        "relative/dir",
    ]
    assert watched_dirs(dirs, workdir) == [Path("/srv/kissbot"), Path("/srv/kissbot/core")]


def test_changes_to_code_files_count_and_lost_events_count() -> None:
    assert code_file("bot.py")
    assert code_file("_speedups.cpython-311-x86_64-linux-gnu.so")
    assert code_file(None)  # the queue overflowed: assume code changed
    assert not code_file("bot.py.swp")
    assert not code_file("system.log")


def test_preload_modules_are_dotted_module_names() -> None:
    assert module_names(["aiohttp", "twitchAPI.twitch", "_x1"]) == (
        "aiohttp",
        "twitchAPI.twitch",
        "_x1",
    )
    assert module_names(None) == ()
    for bad in ("aiohttp", ["a b"], ["os/path"], ["1x"], ["a..b"], [".rel"], [3]):
        with pytest.raises(SettingValueError):
            module_names(bad)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        yield ours, theirs


def test_a_reply_naming_our_own_child_is_believed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs.sendall(encode({"pid": child.pid}))
        assert read_reply(ours, 5, lambda: "ended") == child.pid
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (encode({"pid": 1}), "without a PID"),
        (encode({"pid": True}), "without a PID"),
        (encode({"pid": "12"}), "without a PID"),
        (encode({"ok": 1}), "without a PID"),
        (b"garbage", "it sent not a JSON message"),
        (b"[" * 100_000, "it sent"),  # nested too deep for json: RecursionError
    ],
)
def test_a_reply_without_a_usable_pid_breaks_the_fork_server(
    pair: tuple[socket.socket, socket.socket], reply: bytes, why: str
) -> None:
    ours, theirs = pair
    theirs.sendall(reply)
    with pytest.raises(Broken, match=why):
        read_reply(ours, 5, lambda: "ended")


def test_a_pid_that_is_not_our_child_is_not_believed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    # A live process that is not ours (our own parent): signalling it would be the
    # fork server's choice, not the supervisor's.
    theirs.sendall(encode({"pid": os.getppid()}))
    with pytest.raises(Broken, match=f"it named PID {os.getppid()}, which is not a child"):
        read_reply(ours, 5, lambda: "ended")


def test_silence_and_the_end_of_the_socket_break_it_and_an_error_is_one_bot(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    with pytest.raises(Broken, match=r"did not answer a start within 0\.05 s"):
        read_reply(ours, 0.05, lambda: "ended")
    theirs.sendall(encode({"error": "fork failed: Resource temporarily unavailable"}))
    with pytest.raises(SpawnError, match="fork failed"):
        read_reply(ours, 5, lambda: "ended")
    theirs.shutdown(socket.SHUT_RDWR)
    with pytest.raises(Broken, match="it exited"):
        read_reply(ours, 5, lambda: "it exited (status 1)")


def test_sockets_and_pipes_opened_at_import_are_found_and_files_are_not(tmp_path: Path) -> None:
    a, b = socket.socketpair()
    r, w = os.pipe()
    log = open(tmp_path / "opened-at-import.log", "a")  # noqa: SIM115 - held open on purpose
    try:
        found = " ".join(shared_channels(own_fds=[b.fileno()]))
        assert f"descriptor {a.fileno()} (socket:" in found
        assert f"descriptor {b.fileno()} " not in found  # the fork server's own
        assert f"descriptor {r} (pipe:" in found
        assert f"descriptor {log.fileno()} " not in found
    finally:
        for closable in (a, b, log):
            closable.close()
        os.close(r)
        os.close(w)


def test_memory_merge_says_why_it_cannot_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    from kissbot_supervisor.backends.native import forkserver

    asked: list[tuple[int, int]] = []

    def prctl(option: int, value: int, err: int) -> int:
        asked.append((option, value))
        return err

    monkeypatch.setattr(forkserver, "_prctl", lambda o, v: prctl(o, v, 0))
    assert forkserver._merge_memory() == ""
    assert asked == [(forkserver.PR_SET_MEMORY_MERGE, 1)]
    monkeypatch.setattr(forkserver, "_prctl", lambda o, v: prctl(o, v, forkserver.EINVAL))
    assert "needs Linux 6.4 or later" in forkserver._merge_memory()
    monkeypatch.setattr(forkserver, "_prctl", lambda o, v: prctl(o, v, 1))  # EPERM
    assert forkserver._merge_memory().startswith("prctl(PR_SET_MEMORY_MERGE) failed: ")
