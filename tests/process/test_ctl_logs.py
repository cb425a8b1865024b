"""``kissbotctl logs`` against the installed supervisor (native backend) and its log files.

The first tests ask a running supervisor where the logs are; the others read
hand-made files under ``--workdir`` with no supervisor at all, to pin down the
tail across a rotated file and the follower across a rotation.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from linewatch import EOF_MARK, Follower

from .conftest import StartFleet
from .harness import KISSBOTCTL, TIMEOUT, fleet_config

# kissbotctl without a supervisor must not find one by accident (nor systemd: on
# the host PID 1 is not systemd, which these tests check before relying on it).
NO_SOCKET_ENV = {k: v for k, v in os.environ.items() if k != "KISSBOT_CONTROL_SOCKET"}


def follow(*args: str) -> Follower:
    """``kissbotctl ARGS`` (``logs -f``), its stdout lines collected as they come."""
    return Follower([KISSBOTCTL, *args], "kissbotctl logs -f", TIMEOUT, env=NO_SOCKET_ENV)


def messages(follower: Follower) -> list[str]:
    """The lines so far without their time stamp (and without the end mark)."""
    return [x.split(" ", 1)[1] for x in follower.out.lines if x != EOF_MARK]


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    started: list[Follower] = []
    yield started
    for follower in started:
        follower.close()


def run_ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KISSBOTCTL, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=NO_SOCKET_ENV,
    )


STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} "


# --- with a running supervisor ---------------------------------------------------------


def test_logs_prints_the_last_lines_of_a_bot(start_fleet: StartFleet) -> None:
    sup = start_fleet(fleet_config(["log_chan", "other_chan"], hub=True))
    sup.wait_for(r"log_chan: ready")
    sup.wait_for(r"other_chan: ready")
    result = sup.ctl("logs", "log_chan", "-n", "5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 0 < len(lines) <= 5
    assert all(re.match(STAMP, line) for line in lines), lines
    assert any("joined #log_chan" in line for line in lines), lines
    # All of it: from the supervisor's start note to the bot's own lines.
    everything = sup.ctl("logs", "log_chan", "-n", "all").stdout.splitlines()
    assert "[supervisor] started (PID" in everything[0]
    assert any("demo bot starting" in line for line in everything)
    assert everything[-len(lines) :] == lines
    assert not any("other_chan" in line for line in everything)
    # The same lines as the file, which is where they come from.
    log_file = sup.workdir / "logs" / "supervisor" / "log_chan.log"
    assert log_file.read_text().splitlines()[-len(lines) :] == lines
    hub = sup.ctl("logs", "hub", "-n", "all")
    assert hub.returncode == 0, hub.stderr
    assert "[supervisor] started (PID" in hub.stdout


def test_logs_follow_shows_the_lines_of_a_restart(
    start_fleet: StartFleet, followers: list[Follower]
) -> None:
    sup = start_fleet(fleet_config(["follow_chan"]))
    first = int(sup.wait_for(r"follow_chan: started \(PID (\d+)\)").group(1))
    sup.wait_for(r"follow_chan: ready")
    follower = follow("--socket", str(sup.control), "logs", "follow_chan", "-f", "-n", "2")
    followers.append(follower)
    out = follower.out
    out.wait_for(r"joined #follow_chan")  # the tail came out
    mark = out.mark()
    assert sup.ctl("restart", "follow_chan").returncode == 0
    second = int(out.wait_for(r"\[supervisor\] started \(PID (\d+)\)", since=mark).group(1))
    assert second != first
    assert second == sup.bot("follow_chan")["pid"]
    out.wait_for(r"demo bot starting", since=mark)
    out.wait_for(r"joined #follow_chan", since=mark)
    # Nothing twice: the tail and what followed do not overlap.
    assert len(out.seen(rf"started \(PID {first}\)")) <= 1
    assert follower.interrupt() == 130  # Ctrl-C ends it quietly


def test_logs_of_an_unknown_or_bad_name(start_fleet: StartFleet) -> None:
    sup = start_fleet(fleet_config(["known_chan"]))
    sup.wait_for(r"known_chan: ready")
    unknown = sup.ctl("logs", "nobody_here")
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert unknown.stderr == "kissbotctl: unknown process 'nobody_here' (known: known_chan)\n"
    no_hub = sup.ctl("logs", "hub")
    assert no_hub.returncode == 1
    assert no_hub.stderr == "kissbotctl: this supervisor runs no hub (known: known_chan)\n"
    for bad in ("../../etc/passwd", "a b", "x"):
        result = sup.ctl("logs", bad)
        assert result.returncode == 2, result
        assert result.stderr.startswith(f"kissbotctl: {bad!r} is neither 'hub' nor a Twitch login")


# --- without a supervisor: --workdir ---------------------------------------------------


def write_lines(path: Path, first: int, last: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for i in range(first, last + 1):
            f.write(f"2025-01-02T03:04:05.{i % 1000:03d} line {i}\n")


def test_logs_without_a_supervisor_read_the_files_under_workdir(tmp_path: Path) -> None:
    logs = tmp_path / "logs" / "supervisor"
    write_lines(logs / "file_chan.log.2", 1, 10)
    write_lines(logs / "file_chan.log.1", 11, 13)
    write_lines(logs / "file_chan.log", 14, 15)
    nowhere = ("--socket", str(tmp_path / "no.sock"))
    args = (*nowhere, "logs", "file_chan", "--workdir", str(tmp_path))
    result = run_ctl(*args, "-n", "6")
    assert result.returncode == 0, result.stderr
    assert [line.split(" ", 1)[1] for line in result.stdout.splitlines()] == [
        f"line {i}" for i in range(10, 16)
    ]
    assert len(run_ctl(*args, "-n", "all").stdout.splitlines()) == 15
    assert run_ctl(*args, "-n", "0").stdout == ""
    assert run_ctl(*args).stdout.splitlines()[0].endswith("line 6")  # default: 10
    unknown = run_ctl(*nowhere, "logs", "nobody_here", "--workdir", str(tmp_path))
    assert unknown.returncode == 1
    assert unknown.stderr == (
        f"kissbotctl: no log of 'nobody_here' in {logs} (no nobody_here.log there)\n"
    )


def test_logs_without_a_supervisor_nor_workdir_say_what_to_do(tmp_path: Path) -> None:
    assert not os.path.isdir("/run/systemd/system"), "PID 1 is systemd: the journal would be read"
    missing = tmp_path / "no.sock"
    result = run_ctl("--socket", str(missing), "logs", "some_chan")
    assert result.returncode == 1
    assert result.stderr == (
        f"kissbotctl: no supervisor at {missing} (No such file or directory); "
        "is kissbot-supervisor running?; to read the log files without it, pass --workdir DIR\n"
    )


def test_follow_goes_on_across_a_rotation(tmp_path: Path, followers: list[Follower]) -> None:
    logs = tmp_path / "logs" / "supervisor"
    current = logs / "rot_chan.log"
    write_lines(current, 1, 3)
    follower = follow(
        "--socket",
        str(tmp_path / "no.sock"),
        "logs",
        "rot_chan",
        "-f",
        "-n",
        "1",
        "--workdir",
        str(tmp_path),
    )
    followers.append(follower)
    out = follower.out
    out.wait_for(r"line 3$")
    write_lines(current, 4, 4)
    out.wait_for(r"line 4$")
    # Rotation as LogFile does it: a last line, rename to .1, a new file later.
    write_lines(current, 5, 5)
    current.rename(logs / "rot_chan.log.1")
    time.sleep(0.3)
    write_lines(current, 6, 7)
    out.wait_for(r"line 7$")
    assert messages(follower) == [f"line {i}" for i in range(3, 8)]
    # Truncated in place (copytruncate): read from the start again.
    os.truncate(current, 0)
    time.sleep(0.3)
    write_lines(current, 8, 8)
    out.wait_for(r"line 8$")
    assert messages(follower) == [f"line {i}" for i in range(3, 9)]


# --- several processes, all, --since, --grep --------------------------------------------


def write_at(path: Path, *lines: tuple[str, str]) -> None:
    """Lines of a log file, each (its stamp, its text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.writelines(f"{stamp} {text}\n" for stamp, text in lines)


def fleet_files(tmp_path: Path) -> tuple[str, ...]:
    """Two bots' and the hub's logs, their times interleaved, one bot's across a rotation;
    and the supervisor's own log, which no NAME names."""
    logs = tmp_path / "logs" / "supervisor"
    write_at(
        logs / "alpha_one.log.1",
        ("2025-01-02T03:04:01.000", "alpha starting"),
        ("2025-01-02T03:04:03.000", "alpha ERROR: no token"),
    )
    write_at(logs / "alpha_one.log", ("2025-01-02T03:04:05.000", "alpha joined #alpha_one"))
    write_at(
        logs / "beta_two.log",
        ("2025-01-02T03:04:02.000", "beta starting"),
        ("2025-01-02T03:04:04.000", "beta joined #beta_two"),
        ("2025-01-02T03:04:06.000", "beta error: chat closed"),
    )
    write_at(logs / "hub.log", ("2025-01-02T03:04:00.500", "hub listening"))
    write_at(logs / "kissbot-supervisor.log", ("2025-01-02T03:04:00.000", "supervisor: up"))
    return ("--socket", str(tmp_path / "no.sock"), "--workdir", str(tmp_path), "logs")


def test_logs_of_several_are_interleaved_by_time_and_prefixed(tmp_path: Path) -> None:
    logs = fleet_files(tmp_path)
    result = run_ctl(*logs, "beta_two", "Alpha_One")
    assert result.returncode == 0, result.stderr
    assert [re.sub(STAMP, "", line) for line in result.stdout.splitlines()] == [
        "alpha_one | alpha starting",
        "beta_two  | beta starting",
        "alpha_one | alpha ERROR: no token",
        "beta_two  | beta joined #beta_two",
        "alpha_one | alpha joined #alpha_one",
        "beta_two  | beta error: chat closed",
    ]
    last = run_ctl(*logs, "beta_two", "alpha_one", "-n", "2").stdout.splitlines()
    assert [line.split(" | ", 1)[1] for line in last] == [
        "2025-01-02T03:04:05.000 alpha joined #alpha_one",
        "2025-01-02T03:04:06.000 beta error: chat closed",
    ]


def test_logs_all_is_every_process(tmp_path: Path) -> None:
    every = run_ctl(*fleet_files(tmp_path), "all", "-n", "all")
    assert every.returncode == 0, every.stderr
    lines = every.stdout.splitlines()
    assert len(lines) == 7
    assert lines[0] == "hub       | 2025-01-02T03:04:00.500 hub listening"
    assert not any("supervisor: up" in line for line in lines)  # not a process's log


def text(line: str) -> str:
    """A prefixed line's text: without the name and the stamp."""
    return line.split(" | ", 1)[1].split(" ", 1)[1]


def test_logs_since_and_grep(tmp_path: Path) -> None:
    logs = fleet_files(tmp_path)
    since = run_ctl(*logs, "all", "--since", "2025-01-02 03:04:03")
    assert since.returncode == 0, since.stderr
    assert [text(line) for line in since.stdout.splitlines()] == [
        "alpha ERROR: no token",  # from the rotated copy: written after --since
        "beta joined #beta_two",
        "alpha joined #alpha_one",
        "beta error: chat closed",
    ]
    grep = run_ctl(*logs, "all", "--grep", "error")  # no capital: any case
    assert [text(line) for line in grep.stdout.splitlines()] == [
        "alpha ERROR: no token",
        "beta error: chat closed",
    ]
    exact = run_ctl(*logs, "alpha_one", "beta_two", "--grep", "ERROR", "--since", "2025-01-02")
    assert [text(line) for line in exact.stdout.splitlines()] == ["alpha ERROR: no token"]
    # One process, filtered: its lines as they are, no prefix.
    one = run_ctl(*logs, "beta_two", "--grep", "joined")
    assert one.stdout == "2025-01-02T03:04:04.000 beta joined #beta_two\n"
    # The stamp is not the text: a time does not match it.
    assert run_ctl(*logs, "beta_two", "--grep", "03:04").stdout == ""


def test_logs_bad_since_grep_and_all_without_a_supervisor(tmp_path: Path) -> None:
    logs = fleet_files(tmp_path)
    bad_since = run_ctl(*logs, "all", "--since", "soonish")
    assert bad_since.returncode == 2
    assert "'soonish' is not a time --since understands (10m, 2h, 1d" in bad_since.stderr
    bad_grep = run_ctl(*logs, "all", "--grep", "joined (")
    assert bad_grep.returncode == 2
    assert "--grep 'joined (' is not a regular expression" in bad_grep.stderr
    missing = tmp_path / "no.sock"
    nowhere = run_ctl("--socket", str(missing), "logs", "all")
    assert nowhere.returncode == 1
    assert nowhere.stderr.startswith("kissbotctl: 'all' needs the supervisor, to know its ")
    assert nowhere.stderr.endswith("; or pass --workdir DIR to read every log file there\n")


def test_logs_all_of_a_running_fleet_and_following_them(
    start_fleet: StartFleet, followers: list[Follower]
) -> None:
    sup = start_fleet(fleet_config(["log_one", "log_two"], hub=True))
    for name in ("hub", "log_one", "log_two"):
        sup.wait_for(rf"{name}: ready")
    joined = sup.ctl("logs", "all", "--grep", "joined #")
    assert joined.returncode == 0, joined.stderr
    assert sorted(line.split(" | ")[0] for line in joined.stdout.splitlines()) == [
        "log_one",
        "log_two",
    ]
    follower = follow("--socket", str(sup.control), "logs", "all", "-f", "-n", "1")
    followers.append(follower)
    out = follower.out
    out.wait_for(r" \| ")  # the last line came out: it follows from there
    mark = out.mark()
    assert sup.ctl("restart", "log_two").returncode == 0
    out.wait_for(r"^log_two \| \S+ \[supervisor\] started \(PID \d+\)", since=mark)
    out.wait_for(r"^log_two \| \S+ \[#log_two\] joined #log_two", since=mark)
    # The hub's word on it, from its own log, in the same stream.
    out.wait_for(r"^hub     \| .*bot #log_two registered", since=mark)
    assert follower.interrupt() == 130


def test_a_log_a_bot_linked_elsewhere_or_made_a_fifo_is_not_read(tmp_path: Path) -> None:
    # The bots' user owns logs/: an operator's kissbotctl (root, often) must not
    # print a file a bot linked there, nor hang on a FIFO a bot made there.
    logs = tmp_path / "logs" / "supervisor"
    secret = tmp_path / "secret.txt"
    secret.write_text("2025-01-02T03:04:05.000 root's secret\n")
    logs.mkdir(parents=True)
    (logs / "linked_bot.log").symlink_to(secret)
    os.mkfifo(logs / "piped_bot.log")
    nowhere = ("--socket", str(tmp_path / "no.sock"), "--workdir", str(tmp_path), "logs")
    for name in ("linked_bot", "piped_bot"):
        result = run_ctl(*nowhere, name, "-n", "all")  # run_ctl's timeout: a hang fails
        assert result.returncode == 1, result.stdout
        assert "secret" not in result.stdout
        assert result.stderr.startswith(f"kissbotctl: cannot read {logs / name}.log: ")


def test_what_a_bot_printed_reaches_a_terminal_without_its_escape_sequences(
    tmp_path: Path,
) -> None:
    # A taken-over bot prints escape sequences (clear the screen, retitle the
    # window, move the cursor to fake a line): on the operator's terminal each
    # control character shows as "?"; piped, the bytes are kept for tools.
    from .ptyexpect import PtyProgram

    evil = "2025-01-02T03:04:05.000 \x1b]0;pwned\x07\x1b[2J\x1b[1;1Hall good\x9b31m\n"
    logs = tmp_path / "logs" / "supervisor"
    logs.mkdir(parents=True)
    (logs / "evil_bot.log").write_text(evil)
    args = ["--socket", str(tmp_path / "no.sock"), "logs", "evil_bot", "--workdir", str(tmp_path)]
    piped = run_ctl(*args)
    assert piped.stdout == evil
    term = PtyProgram([KISSBOTCTL, *args], {**NO_SOCKET_ENV, "TERM": "xterm"})
    try:
        assert term.wait() == 0
        raw = term.raw
    finally:
        term.close()
    assert "\x1b" not in raw
    assert "\x07" not in raw
    assert "\x9b" not in raw
    assert "?]0;pwned??[2J?[1;1Hall good?31m" in raw
