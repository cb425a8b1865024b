"""KissBot's file interfaces on a real demo fleet (native backend), driven as KissBot does.

Commands are written by ``sh -c 'printf ... > pids/supervisor.cmd'`` (what
KissBot's scripts do), then the test waits for ``pids/supervisor.result`` to
appear. "Nothing happened" is proved with a control-socket round trip after
the write: the supervisor's one loop reads inotify before it can answer a
request that came later, so once ``status`` is answered, a reply that was
going to be written would have been.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from kissbot_supervisor.kissbot.filecommands import IN_MOVED_FROM
from kissbot_supervisor.runtime.inotify import IN_CLOSE_WRITE, IN_DELETE, IN_MODIFY
from linewatch import wait_until

from .conftest import StartFleet
from .harness import Supervisor, fleet_config, write_config

UNKNOWN = "ERROR: Unknown command"


def write_cmd(workdir: Path, command: str | bytes, name: str = "supervisor.cmd") -> None:
    """``printf '%s' COMMAND > pids/NAME``, as a KissBot shell script writes it."""
    subprocess.run(
        ["sh", "-c", 'printf "%s" "$1" > "pids/$2"', "sh", command, name],
        cwd=workdir,
        check=True,
        timeout=10,
    )


def send(workdir: Path, command: str | bytes) -> str:
    """Write one command and wait for its reply, as KissBot's clients do."""
    pids = workdir / "pids"
    result = pids / "supervisor.result"
    result.unlink(missing_ok=True)
    write_cmd(workdir, command)
    wait_until(result.exists, what=f"pids/supervisor.result for {command!r}")
    assert not (pids / "supervisor.cmd").exists()  # consumed before the reply is written
    return result.read_text()


def index_since(sup: Supervisor, pattern: str, mark: int) -> int:
    return next(i for i, line in enumerate(sup.lines) if i >= mark and re.search(pattern, line))


def pids_of(sup: Supervisor) -> dict[str, int | None]:
    return {b["channel"]: b["pid"] for b in sup.status()["bots"]}


def pids_dir_watches(pid: int, directory: Path) -> list[int]:
    """The masks of the inotify watches process ``pid`` holds on ``directory`` (/proc fdinfo)."""
    ino = format(directory.stat().st_ino, "x")
    masks = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        pattern = rf"^inotify wd:\d+ ino:{ino} .*?mask:([0-9a-f]+)"
        masks += [int(m, 16) for m in re.findall(pattern, info, re.MULTILINE)]
    return masks


def test_every_reply_string(start_fleet: StartFleet, tmp_path: Path) -> None:
    doc = fleet_config(
        ["alpha_one", "beta_two", "broken_bot"],
        per_channel={"broken_bot": ["--exit-code", "1"]},
        supervisor={"restart": {"delay_sec": 0.05, "give_up_after": 2}},
    )
    sup = start_fleet(doc)
    sup.wait_for(r"alpha_one: ready")
    sup.wait_for(r"beta_two: ready")
    sup.wait_for(r"broken_bot: exited 1 2 times")
    pids = pids_of(sup)
    alpha, beta = pids["alpha_one"], pids["beta_two"]

    assert send(tmp_path, "status") == (
        f"SUCCESS: alpha_one:RUNNING:{alpha} | beta_two:RUNNING:{beta} | broken_bot:STOPPED:N/A"
    )
    assert send(tmp_path, "start alpha_one") == f"ERROR: alpha_one already running (PID {alpha})"
    assert send(tmp_path, "stop alpha_one") == f"SUCCESS: alpha_one stopped (was PID {alpha})"
    assert sup.bot("alpha_one")["state"] == "stopped"
    assert send(tmp_path, "stop alpha_one") == "ERROR: alpha_one not running"
    assert send(tmp_path, "status").startswith("SUCCESS: alpha_one:STOPPED:N/A | ")
    # Channel names are Twitch logins: case-insensitive.
    started = send(tmp_path, "start Alpha_One")
    assert started == f"SUCCESS: alpha_one started (PID {sup.bot('alpha_one')['pid']})"
    restarted = send(tmp_path, "restart beta_two")
    new_beta = sup.bot("beta_two")["pid"]
    assert new_beta != beta
    assert restarted == f"SUCCESS: beta_two restarted (PID {new_beta})"
    assert send(tmp_path, "start broken_bot") == "ERROR: broken_bot failed to start"
    assert send(tmp_path, "restart broken_bot") == "ERROR: broken_bot failed to restart"

    assert send(tmp_path, "start nobody_here") == "ERROR: Channel 'nobody_here' not found"
    assert send(tmp_path, "stop hub") == "ERROR: Channel 'hub' not found"  # bots only
    assert send(tmp_path, "restart all") == "ERROR: Channel 'all' not found"
    for junk in ("", "status now", "launch alpha_one", "start", "start alpha_one beta_two"):
        assert send(tmp_path, junk) == UNKNOWN, junk
    assert send(tmp_path, b"start \xff\xfe") == UNKNOWN  # not UTF-8
    assert sup.bot("alpha_one")["state"] == "running"  # none of those touched anything

    # echo adds a newline; a script may also write a temp file and rename it.
    result = tmp_path / "pids" / "supervisor.result"
    result.unlink()
    subprocess.run(
        ["sh", "-c", "echo status > pids/cmd.tmp && mv pids/cmd.tmp pids/supervisor.cmd"],
        cwd=tmp_path,
        check=True,
    )
    wait_until(result.exists, what="the reply to a renamed command file")
    assert result.read_text().startswith("SUCCESS: alpha_one:RUNNING:")
    assert not result.read_text().endswith("\n")
    assert result.stat().st_mode & 0o777 == 0o644
    assert sup.seen(r"supervisor\.cmd: 'stop alpha_one' -> SUCCESS: alpha_one stopped")


def test_partial_write_waits_and_commands_run_in_order(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    # gated_bot writes no ready file: the test decides when it is ready.
    doc = fleet_config(
        ["gated_bot", "other_bot"],
        per_channel={"gated_bot": ["--no-ready-file"]},
        supervisor={"bot": {"ready": "file"}},
    )
    sup = start_fleet(doc)
    sup.wait_for(r"other_bot: ready")
    sup.wait_for(r"gated_bot: started")
    assert sup.ctl("stop", "gated_bot").returncode == 0
    pids = tmp_path / "pids"
    cmd, result = pids / "supervisor.cmd", pids / "supervisor.result"

    # A writer that has not closed the file yet: not read.
    fd = os.open(cmd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"sta")
        sup.status()  # a round trip through the same loop that reads inotify
        assert cmd.read_bytes() == b"sta"
        assert not result.exists()
        os.write(fd, b"tus")
    finally:
        os.close(fd)
    wait_until(result.exists, what="the reply once the writer closed the file")
    other = sup.bot("other_bot")["pid"]
    assert result.read_text() == f"SUCCESS: gated_bot:STOPPED:N/A | other_bot:RUNNING:{other}"

    # A start waits for readiness; a command written meanwhile waits its turn.
    result.unlink()
    mark = sup.mark()
    write_cmd(tmp_path, "start gated_bot")
    wait_until(lambda: not cmd.exists(), what="the start command taken")
    gated = int(sup.wait_for(r"gated_bot: started \(PID (\d+)\)", since=mark).group(1))
    write_cmd(tmp_path, "status")
    assert sup.bot("gated_bot")["state"] == "starting"  # round trip: still waiting
    assert cmd.read_text() == "status"  # not taken while the start waits
    assert not result.exists()
    (pids / "gated_bot.ready").write_text(f"{gated}\n")  # the bot is ready now
    status_line = r"supervisor\.cmd: 'status' -> SUCCESS: "
    sup.wait_for(status_line, since=mark)
    start_line = (
        rf"supervisor\.cmd: 'start gated_bot' -> SUCCESS: gated_bot started \(PID {gated}\)"
    )
    assert index_since(sup, start_line, mark) < index_since(sup, status_line, mark)
    assert not cmd.exists()
    assert result.read_text() == (f"SUCCESS: gated_bot:RUNNING:{gated} | other_bot:RUNNING:{other}")


def test_broadcast_relay(start_fleet: StartFleet, tmp_path: Path) -> None:
    # The other demo bots do not poll their inbox: what the relay wrote stays there.
    doc = fleet_config(
        ["src_bot", "dst_one", "dst_two", "down_bot", "listener"],
        per_channel={"listener": ["--broadcast-poll", "0.05"]},
    )
    sup = start_fleet(doc)
    for name in ("src_bot", "dst_one", "dst_two", "down_bot", "listener"):
        sup.wait_for(rf"{name}: ready")
    assert sup.ctl("stop", "down_bot").returncode == 0
    pids = tmp_path / "pids"

    def inbox(name: str) -> Path:
        return pids / f"{name}.broadcast_in"

    mark = sup.mark()
    write_cmd(tmp_path, "1712345678|src_bot|hello | world\n", "supervisor.broadcast")
    sup.wait_for(
        r"supervisor\.broadcast: from src_bot: relayed to 3 bots \(dst_one, dst_two, listener\)",
        since=mark,
    )
    assert not (pids / "supervisor.broadcast").exists()
    assert inbox("dst_one").read_text() == "src_bot|hello | world\n"
    assert inbox("dst_two").read_text() == "src_bot|hello | world\n"
    assert inbox("dst_one").stat().st_mode & 0o777 == 0o644
    assert not inbox("src_bot").exists()  # the source
    assert not inbox("down_bot").exists()  # not running
    bot_log = tmp_path / "logs" / "supervisor" / "listener.log"
    wait_until(
        lambda: "broadcast from #src_bot: hello | world" in bot_log.read_text(),
        what="the listening bot to show the broadcast",
    )

    # dst_two has not read its inbox: the next broadcast waits, nothing is lost.
    mark = sup.mark()
    write_cmd(tmp_path, "1712345679|dst_one|second one\n", "supervisor.broadcast")
    sup.wait_for(r"supervisor\.broadcast: from dst_one: relayed to 3 bots", since=mark)
    assert inbox("src_bot").read_text() == "dst_one|second one\n"
    assert inbox("dst_one").read_text() == "src_bot|hello | world\n"  # the source again
    assert inbox("dst_two").read_text() == "src_bot|hello | world\n"  # held back
    inbox("dst_two").unlink()  # what a bot does once it has read its inbox
    wait_until(
        lambda: (
            inbox("dst_two").exists() and inbox("dst_two").read_text() == "dst_one|second one\n"
        ),
        what="the held broadcast written once dst_two consumed its inbox",
    )
    wait_until(
        lambda: "broadcast from #dst_one: second one" in bot_log.read_text(),
        what="the listening bot to show the second broadcast",
    )

    # Malformed content: one clear log line, dropped, nothing relayed.
    mark = sup.mark()
    write_cmd(tmp_path, "garbage without bars\n", "supervisor.broadcast")
    line = sup.wait_for(r"supervisor\.broadcast: dropped .*", since=mark).group(0)
    assert "line 1 'garbage without bars'" in line
    assert "expected UNIX_TS|SOURCE_CHANNEL|MESSAGE" in line
    sup.status()  # round trip: anything it was going to do is done
    assert not (pids / "supervisor.broadcast").exists()
    assert inbox("src_bot").read_text() == "dst_one|second one\n"
    assert len(sup.seen(r"relayed to ")) == 2


def test_switched_off_then_on_and_off_by_reload(start_fleet: StartFleet, tmp_path: Path) -> None:
    doc = fleet_config(["quiet_bot"], supervisor={"file_commands": False, "broadcast_relay": False})
    sup = start_fleet(doc)
    sup.wait_for(r"quiet_bot: ready")
    pids = tmp_path / "pids"
    # One watch of pids/ for the ready flags, which the file interfaces share when on.
    (ready_mask,) = pids_dir_watches(sup.proc.pid, pids)
    assert not ready_mask & (IN_MODIFY | IN_DELETE)
    write_cmd(tmp_path, "status")
    write_cmd(tmp_path, "1712345678|someone_else|hi there\n", "supervisor.broadcast")
    sup.status()  # round trip after the writes
    assert (pids / "supervisor.cmd").read_text() == "status"
    assert (pids / "supervisor.broadcast").exists()
    assert not (pids / "supervisor.result").exists()
    assert not (pids / "quiet_bot.broadcast_in").exists()

    # Switched on by a reload: the waiting (fresh) files are handled at once.
    doc["supervisor"]["file_commands"] = True
    doc["supervisor"]["broadcast_relay"] = True
    write_config(tmp_path, doc)
    assert sup.request({"cmd": "reload"})["ok"]
    pid = sup.bot("quiet_bot")["pid"]
    wait_until((pids / "supervisor.result").exists, what="the reply after the switch-on")
    assert (pids / "supervisor.result").read_text() == f"SUCCESS: quiet_bot:RUNNING:{pid}"
    assert (pids / "quiet_bot.broadcast_in").read_text() == "someone_else|hi there\n"
    (shared,) = pids_dir_watches(sup.proc.pid, pids)
    assert shared == ready_mask | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_CLOSE_WRITE

    # And off again: the watch is the ready flags' alone.
    doc["supervisor"]["file_commands"] = False
    doc["supervisor"]["broadcast_relay"] = False
    write_config(tmp_path, doc)
    assert sup.request({"cmd": "reload"})["ok"]
    assert pids_dir_watches(sup.proc.pid, pids) == [ready_mask]
    (pids / "supervisor.result").unlink()
    write_cmd(tmp_path, "status")
    sup.status()
    assert (pids / "supervisor.cmd").exists()
    assert not (pids / "supervisor.result").exists()


def test_pid_file_and_stale_files_at_start_up(start_fleet: StartFleet, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    # Left by a client while no supervisor ran, an hour ago: its client is long gone.
    (pids / "supervisor.cmd").write_text("stop keeper_bot")
    (pids / "supervisor.broadcast").write_text("1712345678|someone_else|old news\n")
    hour_ago = time.time() - 3600
    for name in ("supervisor.cmd", "supervisor.broadcast"):
        os.utime(pids / name, (hour_ago, hour_ago))
    sup = start_fleet(fleet_config(["keeper_bot"]))
    sup.wait_for(r"supervisor: removed supervisor\.cmd, written 3600 s ago")
    sup.wait_for(r"supervisor: removed supervisor\.broadcast, written 3600 s ago")
    sup.wait_for(r"keeper_bot: ready")
    assert sup.bot("keeper_bot")["state"] == "running"
    assert not (pids / "supervisor.cmd").exists()
    assert not (pids / "keeper_bot.broadcast_in").exists()

    pidfile = pids / "supervisor.pid"
    assert pidfile.read_text() == f"{sup.proc.pid}\n"
    assert pidfile.stat().st_mode & 0o777 == 0o644
    sup.signal(signal.SIGTERM)
    assert sup.stop() == 0
    assert not pidfile.exists()


def test_a_fresh_command_waiting_at_start_up_is_answered(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    (pids / "supervisor.cmd").write_text("status\n")  # a client is still waiting for it
    sup = start_fleet(fleet_config(["early_bot"]))
    wait_until((pids / "supervisor.result").exists, what="the reply to the waiting command")
    assert (pids / "supervisor.result").read_text().startswith("SUCCESS: early_bot:")
    sup.wait_for(r"supervisor\.cmd: 'status' -> SUCCESS: early_bot:")
