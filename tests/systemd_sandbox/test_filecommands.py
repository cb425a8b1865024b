"""KissBot's file interfaces with the systemd backend, in the real systemd sandbox.

The supervisor runs as ``kissbot-supervisor.service`` (``UMask=0077``,
``ProtectSystem=strict`` with the workdir read-write); KissBot's clients are
played by ``sh -c 'printf ... > pids/supervisor.cmd'`` run inside the sandbox
in the workdir, as KissBot's scripts run next to it. "Nothing happened" is
proved with a ``kissbotctl status`` round trip after the write.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import linewatch

from .fleet import TIMEOUT, Fleet, config, start


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    linewatch.wait_until(predicate, what, TIMEOUT)  # the sandbox's own, longer bound


def write(fleet: Fleet, text: str, name: str = "supervisor.cmd") -> None:
    fleet.sandbox.run(
        "sh", "-c", 'printf "%s" "$1" > "pids/$2"', "sh", text, name, cwd=fleet.workdir
    )


def send(fleet: Fleet, command: str) -> str:
    result = fleet.workdir / "pids" / "supervisor.result"
    result.unlink(missing_ok=True)
    write(fleet, command)
    wait_until(result.exists, f"pids/supervisor.result for {command!r}")
    return result.read_text()


def main_pid(fleet: Fleet, unit: str) -> int:
    return int(fleet.show(unit, "MainPID")["MainPID"])


def test_commands_and_the_pid_file(fleet: Fleet) -> None:
    start(fleet, config(["alpha_bot", "beta_bot"], hub=False))
    fleet.journal.wait_for(r"alpha_bot: ready")
    fleet.journal.wait_for(r"beta_bot: ready")
    pidfile = fleet.workdir / "pids" / "supervisor.pid"
    assert pidfile.read_text() == f"{main_pid(fleet, 'kissbot-supervisor.service')}\n"
    assert pidfile.stat().st_mode & 0o777 == 0o644  # readable by scripts despite UMask=0077

    alpha = main_pid(fleet, "kissbot-bot@alpha_bot.service")
    beta = main_pid(fleet, "kissbot-bot@beta_bot.service")
    assert send(fleet, "status") == f"SUCCESS: alpha_bot:RUNNING:{alpha} | beta_bot:RUNNING:{beta}"
    assert send(fleet, "stop alpha_bot") == f"SUCCESS: alpha_bot stopped (was PID {alpha})"
    assert fleet.show("kissbot-bot@alpha_bot.service", "ActiveState")["ActiveState"] in (
        "inactive",
        "",
    )
    assert send(fleet, "stop alpha_bot") == "ERROR: alpha_bot not running"
    started = send(fleet, "start ALPHA_BOT")
    alpha = main_pid(fleet, "kissbot-bot@alpha_bot.service")
    assert started == f"SUCCESS: alpha_bot started (PID {alpha})"
    assert send(fleet, "start alpha_bot") == f"ERROR: alpha_bot already running (PID {alpha})"
    restarted = send(fleet, "restart beta_bot")
    new_beta = main_pid(fleet, "kissbot-bot@beta_bot.service")
    assert new_beta != beta
    assert restarted == f"SUCCESS: beta_bot restarted (PID {new_beta})"
    assert send(fleet, "restart nobody_here") == "ERROR: Channel 'nobody_here' not found"
    assert send(fleet, "stop hub") == "ERROR: Channel 'hub' not found"
    assert send(fleet, "reboot everything") == "ERROR: Unknown command"
    result = fleet.workdir / "pids" / "supervisor.result"
    assert result.stat().st_mode & 0o777 == 0o644

    fleet.sandbox.systemctl("stop", "kissbot-supervisor")
    assert not pidfile.exists()


def test_broadcast_relay(fleet: Fleet) -> None:
    # The demo bots do not poll their inbox here: what the relay wrote stays there.
    start(fleet, config(["src_bot", "dst_bot", "down_bot"], hub=False))
    for name in ("src_bot", "dst_bot", "down_bot"):
        fleet.journal.wait_for(rf"{name}: ready")
    assert send(fleet, "stop down_bot").startswith("SUCCESS: down_bot stopped")
    pids = fleet.workdir / "pids"
    mark = fleet.journal.mark()
    write(fleet, "1712345678|src_bot|hello from systemd\n", "supervisor.broadcast")
    fleet.journal.wait_for(
        r"supervisor\.broadcast: from src_bot: relayed to 1 bots \(dst_bot\)", since=mark
    )
    inbox = pids / "dst_bot.broadcast_in"
    assert inbox.read_text() == "src_bot|hello from systemd\n"
    assert inbox.stat().st_mode & 0o777 == 0o644  # the bots' user must read it
    assert not (pids / "src_bot.broadcast_in").exists()
    assert not (pids / "down_bot.broadcast_in").exists()
    assert not (pids / "supervisor.broadcast").exists()

    mark = fleet.journal.mark()
    write(fleet, "no bars at all\n", "supervisor.broadcast")
    line = fleet.journal.wait_for(r"supervisor\.broadcast: dropped .*", since=mark).group(0)
    assert "expected UNIX_TS|SOURCE_CHANNEL|MESSAGE" in line
    assert inbox.read_text() == "src_bot|hello from systemd\n"


def test_switched_off_files_are_left_alone(fleet: Fleet) -> None:
    doc = config(["quiet_bot"], hub=False)
    doc["supervisor"].update(file_commands=False, broadcast_relay=False)
    start(fleet, doc)
    fleet.journal.wait_for(r"quiet_bot: ready")
    write(fleet, "status")
    write(fleet, "1712345678|someone_else|hi\n", "supervisor.broadcast")
    assert fleet.ctl("status").returncode == 0  # a round trip after the writes
    pids: Path = fleet.workdir / "pids"
    assert (pids / "supervisor.cmd").read_text() == "status"
    assert (pids / "supervisor.broadcast").exists()
    assert not (pids / "supervisor.result").exists()
    assert not (pids / "quiet_bot.broadcast_in").exists()
