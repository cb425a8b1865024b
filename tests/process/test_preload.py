"""bot.preload with a KissBot-like ``main.py``: what a forked bot sees, exits, fallbacks
and code updates (the shared native tests run with preload in test_native.py)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from linewatch import wait_until

from .conftest import StartFleet
from .harness import fleet_config, write_config

# A bot program as KissBot's main.py is one: top-level imports (one of them its own
# package in the checkout), argparse on sys.argv, a `__main__` logger, exit codes
# from sys.exit. Its behaviour is chosen by its channel's name.
MAIN_PY = """\
import argparse
import json
import logging
import os
import socket
import sys
import time

from botlib import state

log = logging.getLogger(__name__)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--channel", required=True)
    args = parser.parse_args()
    if args.channel == "exits_three":
        sys.exit(3)
    if args.channel == "raises_bot":
        raise RuntimeError("boom at start-up")
    record = {
        "argv": sys.argv, "name": __name__, "logger": log.name, "pid": os.getpid(),
        "ppid": os.getppid(), "env": dict(os.environ), "cwd": os.getcwd(),
        "path0": sys.path[0], "imported_in": state.IMPORTED_IN, "version": state.VERSION,
    }
    with open(f"pids/{args.channel}.json", "w") as f:
        json.dump(record, f)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
"""

STATE_PY = "import os\n\nIMPORTED_IN = os.getpid()\nVERSION = {version}\n"


def workdir_with_program(tmp_path: Path, version: int = 1) -> None:
    (tmp_path / "botlib").mkdir(exist_ok=True)
    (tmp_path / "botlib" / "__init__.py").write_text("")
    (tmp_path / "botlib" / "state.py").write_text(STATE_PY.format(version=version))
    (tmp_path / "main.py").write_text(MAIN_PY)
    (tmp_path / "pids").mkdir(exist_ok=True)


def main_py_fleet(channels: list[str], **bot: Any) -> dict[str, Any]:
    command = [sys.executable, "main.py", "--channel", "{channel}"]
    return fleet_config(
        channels,
        supervisor={
            "bot": {"command": command, "preload": True, **bot},
            "restart": {"delay_sec": 0.05, "give_up_after": 2},
        },
    )


def record_of(tmp_path: Path, channel: str) -> dict[str, Any]:
    path = tmp_path / "pids" / f"{channel}.json"
    wait_until(path.exists, what=f"{channel}'s record")
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def test_a_forked_bot_runs_as_main_with_its_own_argv_environment_and_parent(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    workdir_with_program(tmp_path)
    sup = start_fleet(main_py_fleet(["plain_bot"], watchdog_sec=60))
    server = int(sup.wait_for(r"preload: the fork server \(PID (\d+)\) imported").group(1))
    sup.wait_for(r"plain_bot: ready")
    record = record_of(tmp_path, "plain_bot")
    assert record["pid"] == sup.bot("plain_bot")["pid"]
    assert record["imported_in"] == server  # its own module came from the fork server
    assert record["ppid"] == sup.proc.pid  # handed to the supervisor, not the server's
    assert record["argv"] == ["main.py", "--channel", "plain_bot"]  # as `python3 main.py`
    assert (record["name"], record["logger"]) == ("__main__", "__main__")
    assert record["cwd"] == str(tmp_path)
    assert record["path0"] == str(tmp_path)  # the script's directory, as the interpreter does
    env = record["env"]
    assert env["KISSBOT_PROCESS"] == "plain_bot"
    assert env["WATCHDOG_PID"] == str(record["pid"])
    assert env["WATCHDOG_USEC"] == "60000000"
    assert env["NOTIFY_SOCKET"].endswith("notify.sock")
    # Its own process group, like an exec'd bot: a group kill reaches it and only it.
    assert os.getpgid(record["pid"]) == record["pid"]
    # The lock is held by the bot (the fork server kept no copy of it).
    lock = str(tmp_path / "pids" / "plain_bot.lock")
    holders = [
        fd for fd in os.listdir(f"/proc/{record['pid']}/fd")
        if os.readlink(f"/proc/{record['pid']}/fd/{fd}") == lock
    ]  # fmt: skip
    assert len(holders) == 1
    # And nothing else but its three standard descriptors, as an exec'd bot
    # (docs/security.md, "What a bot inherits"): no fork server's socket or pipe.
    assert sorted(os.listdir(f"/proc/{record['pid']}/fd")) == sorted(["0", "1", "2", *holders])
    assert not [
        fd
        for fd in os.listdir(f"/proc/{server}/fd")
        if os.readlink(f"/proc/{server}/fd/{fd}") == lock
    ]


def _merge_any(pid: int) -> bool:
    """Whether the kernel merges ``pid``'s memory (``PR_SET_MEMORY_MERGE`` took)."""
    for line in Path(f"/proc/{pid}/ksm_stat").read_text().splitlines():
        if line.startswith("ksm_merge_any:"):
            return line.split(":", 1)[1].strip() == "yes"
    raise AssertionError(f"no ksm_merge_any in /proc/{pid}/ksm_stat")


def _kernel_merges_processes() -> bool:
    """Whether this kernel has PR_SET_MEMORY_MERGE (Linux 6.4; PR_GET is 68)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(68, 0, 0, 0, 0) >= 0) and Path("/proc/self/ksm_stat").exists()


@pytest.mark.skipif(not _kernel_merges_processes(), reason="no PR_SET_MEMORY_MERGE here")
def test_memory_merge_opens_the_forked_bots_memory_to_ksm_and_says_so(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    workdir_with_program(tmp_path)
    sup = start_fleet(main_py_fleet(["merged_one", "merged_two"], memory_merge=True))
    server = int(sup.wait_for(r"preload: the fork server \(PID (\d+)\) imported").group(1))
    said = sup.wait_for(r"preload: bot\.memory_merge: (.*)").group(1)
    switched_on = Path("/sys/kernel/mm/ksm/run").read_text().strip() != "0"
    assert said.startswith("the bots' memory is open to KSM")
    assert ("KSM is off on this machine" in said) is not switched_on
    for channel in ("merged_one", "merged_two"):
        sup.wait_for(rf"{channel}: ready")
        assert _merge_any(record_of(tmp_path, channel)["pid"])
    assert _merge_any(server)


@pytest.mark.skipif(not _kernel_merges_processes(), reason="no PR_SET_MEMORY_MERGE here")
def test_without_memory_merge_no_bot_is_opened_to_ksm(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    workdir_with_program(tmp_path)
    sup = start_fleet(main_py_fleet(["unmerged_bot"]))
    sup.wait_for(r"preload: the fork server \(PID \d+\) imported")
    sup.wait_for(r"unmerged_bot: ready")  # logged after what the fork server's ready brings
    assert not _merge_any(record_of(tmp_path, "unmerged_bot")["pid"])
    assert sup.seen(r"preload: bot\.memory_merge") == []


def test_exit_statuses_and_tracebacks_are_the_programs_own(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    workdir_with_program(tmp_path)
    sup = start_fleet(main_py_fleet(["exits_three", "raises_bot", "steady_bot"]))
    sup.wait_for(r"exits_three: exited 3")
    sup.wait_for(r"raises_bot: exited 1")
    sup.wait_for(r"steady_bot: ready")
    log = (tmp_path / "logs" / "supervisor" / "raises_bot.log").read_text()
    assert "Traceback (most recent call last):" in log
    assert "RuntimeError: boom at start-up" in log
    assert 'main.py", line' in log
    # The program's frames only, as `python3 main.py` prints them.
    assert "forkserver.py" not in log
    assert "runpy" not in log


def test_an_import_that_fails_falls_back_to_the_normal_start(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    workdir_with_program(tmp_path)
    sup = start_fleet(main_py_fleet(["fallback_bot"], preload_modules=["botlib.missing"]))
    sup.wait_for(
        r"preload: bot\.preload is on but cannot apply: the fork server ended: importing "
        r"botlib\.missing failed: ModuleNotFoundError.*; bots start the normal way"
    )
    sup.wait_for(r"fallback_bot: ready")
    record = record_of(tmp_path, "fallback_bot")
    assert record["imported_in"] == record["pid"]  # imported by itself: exec'd


def test_a_thread_started_at_import_falls_back_to_the_normal_start(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    workdir_with_program(tmp_path)
    (tmp_path / "botlib" / "spinner.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
    )
    sup = start_fleet(main_py_fleet(["threaded_bot"], preload_modules=["botlib.spinner"]))
    sup.wait_for(r"cannot apply: the fork server ended: 2 threads run after the imports")
    sup.wait_for(r"threaded_bot: ready")


def test_a_socket_opened_at_import_falls_back_to_the_normal_start(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    workdir_with_program(tmp_path)
    (tmp_path / "botlib" / "eager.py").write_text(
        "import socket\nCONNECTION = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    )
    sup = start_fleet(main_py_fleet(["eager_bot"], preload_modules=["botlib.eager"]))
    sup.wait_for(
        r"cannot apply: the fork server ended: a module opened descriptor \d+ \(socket:\[\d+\]\) "
        r"when imported"
    )
    sup.wait_for(r"eager_bot: ready")


def test_a_command_that_is_not_a_python_program_is_said_once_and_runs(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    workdir_with_program(tmp_path)
    doc = main_py_fleet(["shell_bot", "shell_two"])
    doc["supervisor"]["bot"]["command"] = ["sh", "-c", f'exec {sys.executable} main.py "$@"', "sh"]
    doc["supervisor"]["bot"]["command"] += ["--channel", "{channel}"]
    sup = start_fleet(doc)
    sup.wait_for(r"shell_bot: ready")
    sup.wait_for(r"shell_two: ready")
    said = sup.seen(r"cannot apply: the bot command starts 'sh', not a Python interpreter")
    assert len(said) == 1


def test_new_code_on_disk_replaces_the_fork_server_and_offers_a_rolling_restart(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    workdir_with_program(tmp_path)
    sup = start_fleet(main_py_fleet(["old_code", "new_code"]))
    first = int(sup.wait_for(r"preload: the fork server \(PID (\d+)\) imported").group(1))
    sup.wait_for(r"old_code: ready")
    sup.wait_for(r"new_code: ready")
    running = sup.bot("old_code")["pid"]
    mark = sup.mark()
    workdir_with_program(tmp_path, version=2)  # a `git pull`
    sup.wait_for(
        r"preload: bot code changed on disk \(.*\): a new fork server imports it .*"
        r"kissbotctl restart all --rolling N",
        since=mark,
    )
    second = int(
        sup.wait_for(r"preload: the fork server \(PID (\d+)\) imported", since=mark).group(1)
    )
    assert second != first
    wait_until(lambda: not Path(f"/proc/{first}").exists(), what="the old server gone")
    # Offered, not forced: the running bots go on with the old code.
    assert sup.bot("old_code")["pid"] == running
    assert record_of(tmp_path, "old_code")["version"] == 1
    (tmp_path / "pids" / "new_code.json").unlink()
    mark = sup.mark()
    assert sup.ctl("restart", "new_code").returncode == 0
    sup.wait_for(r"new_code: ready", since=mark)
    record = record_of(tmp_path, "new_code")
    assert (record["version"], record["imported_in"]) == (2, second)


def test_a_reload_that_changes_the_program_gets_a_fork_server_of_the_new_one(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    workdir_with_program(tmp_path)
    doc = main_py_fleet(["moving_bot"])
    sup = start_fleet(doc)
    first = int(sup.wait_for(r"preload: the fork server \(PID (\d+)\) imported").group(1))
    sup.wait_for(r"moving_bot: ready")
    (tmp_path / "pids" / "moving_bot.json").unlink()
    (tmp_path / "bot2.py").write_text(MAIN_PY)
    doc["supervisor"]["bot"]["command"][1] = "bot2.py"
    write_config(tmp_path, doc)
    mark = sup.mark()
    sup.signal(signal.SIGHUP)
    sup.wait_for(r"preload: the bot command now runs bot2\.py with .*: a new fork", since=mark)
    second = int(
        sup.wait_for(r"preload: the fork server \(PID (\d+)\) imported", since=mark).group(1)
    )
    assert second != first
    sup.wait_for(r"moving_bot: ready", since=mark)
    record = record_of(tmp_path, "moving_bot")
    assert (record["argv"][0], record["imported_in"]) == ("bot2.py", second)
    assert not sup.seen(r"cannot apply")
