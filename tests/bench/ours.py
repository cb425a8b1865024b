"""Our supervisor under test: ``kissbot-supervisor``, native backend, bots ready by sd_notify."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.fleets import (
    DEMO_BOT_FLAGS,
    KISSBOT_SUPERVISOR,
    KISSBOTCTL,
    LOG_BACKUPS,
    LOG_FILE_BYTES,
    RPC_TIMEOUT,
    STARTUP_TIMEOUT,
    BenchError,
    Fleet,
    Lines,
    clean_env,
)

READY_LINE = re.compile(r" ([a-z0-9_]+): ready$")


class Ours(Fleet):
    """kissbot-supervisor, native backend, bots ready by sd_notify."""

    name = "ours"
    label = "kissbot-supervisor"

    def __init__(self, root: Path, channels: Sequence[str], restart_delay: float) -> None:
        super().__init__(root, channels)
        self.restart_delay = restart_delay
        self.runtime_dir = self.workdir / "run"
        self.control = self.runtime_dir / "control.sock"
        self.lines: Lines | None = None
        self._mark = 0
        self.watchdog_sec = 0.0  # off until the hang phase (its pings would wake us)

    def config(self) -> dict[str, Any]:
        command = [
            "{supervisor_python}",
            "-m",
            "kissbot_supervisor.demo",
            "bot",
            "--channel",
            "{channel}",
            *DEMO_BOT_FLAGS,
        ]
        return {
            "twitch": {"channels": self.channels},
            "bot": {"name": "serda_bot"},
            "supervisor": {
                "backend": "native",
                "bot": self.bot_settings(command),
                # Distinct bots are killed, and max = first delay, so every
                # restart waits exactly the configured delay.
                "restart": {
                    "delay_sec": self.restart_delay,
                    "max_delay_sec": self.restart_delay,
                    "give_up_after": 0,
                },
                "logs": {"max_bytes": LOG_FILE_BYTES, "backups": LOG_BACKUPS},
            },
        }

    def bot_settings(self, command: list[str]) -> dict[str, Any]:
        # Pacing off: the peer has none, and the demo bots log in nowhere.
        bot: dict[str, Any] = {"ready": "notify", "command": command, "logins_per_10s": 0}
        if self.watchdog_sec > 0:
            bot["watchdog_sec"] = self.watchdog_sec
        return bot

    def write_config(self) -> None:
        config = self.workdir / "config" / "config.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def enable_watchdog(self, seconds: float) -> float:
        """The config with ``bot.watchdog_sec``, reloaded: every bot restarts with it."""
        self.watchdog_sec = seconds
        self.write_config()
        mark = self._ready_mark()
        started = time.monotonic()
        self.request({"cmd": "reload"})
        self._await_ready_since(mark, started + STARTUP_TIMEOUT)
        elapsed = time.monotonic() - started
        self.remember_children()
        return elapsed

    def _ready_mark(self) -> int:
        assert self.lines is not None
        return self.lines.count()

    def _await_ready_since(self, mark: int, deadline: float) -> None:
        """Until every bot has said ``ready`` again after ``mark``."""
        assert self.lines is not None
        wanted, seen = set(self.channels), mark
        ready: set[str] = set()
        while ready != wanted:
            for _at, line in self.lines.since(seen):
                seen += 1
                match = READY_LINE.search(line)
                if match and match[1] in wanted:
                    ready.add(match[1])
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.label}: {len(ready)}/{len(wanted)} bots ready again after "
                    f"the reload\n{self.tail()}"
                )
            self.lines.wait_beyond(seen, 0.05)

    def launch(self) -> None:
        self.write_config()
        argv = [
            str(KISSBOT_SUPERVISOR),
            "--workdir",
            str(self.workdir),
            "--runtime-dir",
            str(self.runtime_dir),
            "--non-interactive",
        ]
        self.launched_at = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
            start_new_session=True,
        )
        assert self.proc.stderr is not None
        self.lines = Lines(self.proc.stderr)

    def tail(self) -> str:
        return "" if self.lines is None else self.lines.tail()

    def await_fleet(self) -> dict[str, float]:
        assert self.lines is not None
        ready: dict[str, float] = {}
        files_at: float | None = None
        seen = 0
        wanted = set(self.channels)
        deadline = self.launched_at + STARTUP_TIMEOUT
        while True:
            for at, line in self.lines.since(seen):
                seen += 1
                match = READY_LINE.search(line)
                if match and match[1] in wanted:
                    ready.setdefault(match[1], at)
            now = time.monotonic()
            if files_at is None and self.ready_files() >= len(wanted):
                files_at = now
            if len(ready) == len(wanted) and files_at is not None:
                break
            self.check_alive()
            if now > deadline:
                raise BenchError(
                    f"{self.label}: {len(ready)}/{len(wanted)} bots ready after "
                    f"{STARTUP_TIMEOUT:g} s\n{self.tail()}"
                )
            # Woken by the next log line; the files have no event, so look every 10 ms.
            self.lines.wait_beyond(seen, 0.01)
        self.remember_children()
        return {
            "startup_s": max(ready.values()) - self.launched_at,
            "startup_files_s": files_at - self.launched_at,
        }

    def cli_status_argv(self) -> list[str]:
        return [str(KISSBOTCTL), "--socket", str(self.control), "status"]

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request on the control socket (a JSON line each way)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(RPC_TIMEOUT)
            s.connect(str(self.control))
            s.sendall(json.dumps(request).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        answer: dict[str, Any] = json.loads(buf)
        if not answer.get("ok"):
            raise BenchError(f"{self.label}: {request} failed: {answer}")
        return answer

    def socket_status(self) -> None:
        self.request({"cmd": "status"})

    def status_states(self) -> dict[str, str]:
        """Channel -> state from the control socket (used once, after the measurements)."""
        bots = self.request({"cmd": "status"})["status"]["bots"]
        return {str(b["channel"]): str(b["state"]) for b in bots}

    def _begin_crash(self, channel: str) -> None:
        assert self.lines is not None
        self._mark = self.lines.count()

    def _view_ready(self, channel: str, old_pid: int, now: float) -> float | None:
        assert self.lines is not None
        for at, line in self.lines.since(self._mark):
            match = READY_LINE.search(line)
            if match and match[1] == channel:
                return at
        return None

    def _close_streams(self) -> None:
        if self.lines is not None:
            self.lines.join(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
