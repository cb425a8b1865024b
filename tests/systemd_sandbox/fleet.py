"""A supervisor run as ``systemctl start kissbot-supervisor`` in the sandbox, and its journal.

Shared by the systemd test modules: the unit from ``units/`` with a drop-in
pointing ExecStart at this checkout, a config writer, ``kissbotctl`` and
``systemctl show`` run inside, and the supervisor's journal followed line by line.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from demo_argv import demo_bot_command, demo_hub_command, per_channel_bot_command
from linewatch import Follower

from .sandbox import SystemdSandbox

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TIMEOUT = 30.0


demo_bot = demo_bot_command
per_channel_bot = per_channel_bot_command


def config(
    channels: Sequence[str],
    *,
    hub: bool = True,
    bot_command: list[str] | None = None,
    supervisor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    sup: dict[str, Any] = {
        "backend": "systemd",
        # Pacing off: these fleets test other things (tests of pacing turn it on).
        "bot": {"ready": "notify", "command": bot_command or demo_bot(), "logins_per_10s": 0},
        # No retries of parked processes: these fleets test other things.
        "restart": {
            "delay_sec": 0.3,
            "max_delay_sec": 5,
            "give_up_after": 5,
            "retry_parked_sec": 0,
        },
        "stop_timeout_sec": 5,
        "systemd": {"hardening": True},
    }
    if hub:
        sup["hub"] = {
            "enabled": True,
            "socket": "hub.sock",
            "ready": "socket",
            "command": demo_hub_command(),
        }
    for key, value in (supervisor or {}).items():
        sup[key] = {**sup[key], **value} if isinstance(sup.get(key), dict) else value
    return {"twitch": {"channels": list(channels)}, "bot": {"name": "serda_bot"}, "supervisor": sup}


def journal_follower(sandbox: SystemdSandbox, unit: str) -> Follower:
    """``journalctl -u UNIT -f`` inside the sandbox, lines collected as they come."""
    argv = [
        "nsenter",
        "-t",
        str(sandbox.pid1),
        "-m",
        "-p",
        "-u",
        "--",
        "journalctl",
        "-u",
        unit,
        "-f",
        "-n",
        "all",
        "-o",
        "cat",
        "--no-pager",
        f"--since=@{time.time():.6f}",
    ]  # this test's lines only: one sandbox per session
    return Follower(argv, "journal", TIMEOUT)  # fmt: skip


class Fleet:
    def __init__(self, sandbox: SystemdSandbox, workdir: Path) -> None:
        self.sandbox = sandbox
        self.workdir = workdir
        self.journal = journal_follower(sandbox, "kissbot-supervisor.service")

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.sandbox.run(str(BIN / "kissbotctl"), *args, check=False)

    def pids(self) -> dict[str, int | None]:
        """Every process's PID, the hub's under ``hub``: what an adoption must keep."""
        status = self.status()
        return {"hub": status["hub"]["pid"], **{b["channel"]: b["pid"] for b in status["bots"]}}

    def status(self) -> dict[str, Any]:
        result = self.ctl("status", "--json")
        status: dict[str, Any] = json.loads(result.stdout)
        return status

    def bot(self, channel: str) -> dict[str, Any]:
        return dict(next(b for b in self.status()["bots"] if b["channel"] == channel))

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sandbox.systemctl("show", unit, *(f"-p{p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def write_config(self, doc: dict[str, Any]) -> None:
        (self.workdir / "config").mkdir(parents=True, exist_ok=True)
        (self.workdir / "config" / "config.yaml").write_text(yaml.safe_dump(doc))


def install_supervisor(sandbox: SystemdSandbox, workdir: Path) -> None:
    for name in ("kissbot-supervisor.service", "kissbot.slice"):
        (sandbox.units_dir / name).write_text((REPO / "units" / name).read_text())
    dropin = sandbox.units_dir / "kissbot-supervisor.service.d"
    dropin.mkdir(exist_ok=True)
    (dropin / "test.conf").write_text(
        "[Unit]\n"
        "ConditionPathExists=\n"
        "[Service]\n"
        "ExecStart=\n"
        f"ExecStart={BIN / 'kissbot-supervisor'} --backend systemd --non-interactive "
        f"--workdir {workdir}\n"
        f"WorkingDirectory={workdir}\n"
        "ExecStopPost=\n"
        f"ExecStopPost={BIN / 'kissbot-supervisor'} stop-leftovers\n"
        "ExecReload=\n"
        f"ExecReload={BIN / 'kissbotctl'} reload\n"
        "ReadWritePaths=\n"
        f"ReadWritePaths={workdir}\n"
    )
    sandbox.daemon_reload()


def start(fleet: Fleet, doc: dict[str, Any]) -> None:
    fleet.write_config(doc)
    fleet.sandbox.systemctl("start", "kissbot-supervisor")


BUS_CONF = Path("/usr/share/dbus-1/system.conf")


@contextlib.contextmanager
def bus_reply_limit(sandbox: SystemdSandbox, limit: int) -> Iterator[None]:
    """The sandbox's system bus with ``max_replies_per_connection`` lowered to ``limit``.

    The bus refuses a caller's method calls past that many unanswered ones
    (LimitsExceeded; 128 on a stock system bus): a low limit lets a dozen units
    show what hundreds do at the stock one. The changed system.conf is bound
    over the stock one inside the sandbox's own mount namespace only, and the
    bus re-reads it (ReloadConfig applies limits to live connections too).
    """
    conf = sandbox.instance_dir / "dbus-system-limited.conf"
    stock = BUS_CONF.read_text()
    limit_line = f'  <limit name="max_replies_per_connection">{limit}</limit>\n'
    conf.write_text(stock.replace("</busconfig>", limit_line + "</busconfig>"))
    reload = ("busctl", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
              "org.freedesktop.DBus", "ReloadConfig")  # fmt: skip
    sandbox.run("mount", "-n", "--bind", str(conf), str(BUS_CONF))
    try:
        sandbox.run(*reload)
        yield
    finally:
        sandbox.run("umount", "-n", str(BUS_CONF))
        sandbox.run(*reload)
