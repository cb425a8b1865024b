"""Runs the installed ``kissbot-supervisor`` on a demo fleet in a temporary KissBot root.

Synchronisation is on real signals only: the supervisor's log lines (read
from its stderr pipe as they come) and its control socket. ``wait_for`` waits
for a line, with a generous timeout that only bounds a broken run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from demo_argv import (
    PER_CHANNEL_SCRIPT,
    PER_CHANNEL_SOURCE,
    PRELOAD_MODULES,
    demo_bot_command,
    demo_hub_command,
    per_channel_bot_command,
)
from linewatch import LineWatcher

BIN = Path(sys.executable).parent
SUPERVISOR = str(BIN / "kissbot-supervisor")
KISSBOTCTL = str(BIN / "kissbotctl")
TIMEOUT = 20.0


def fleet_config(
    channels: Sequence[str],
    *,
    hub: bool = False,
    hub_extra: Sequence[str] = (),
    bot_extra: Sequence[str] = (),
    per_channel: dict[str, Sequence[str]] | None = None,
    supervisor: dict[str, Any] | None = None,
    document: dict[str, Any] | None = None,
    preload: bool = False,
) -> dict[str, Any]:
    """A KissBot config dict running demo bots (per-channel flags via a wrapper map);
    ``preload``: bots forked from a fork server (bot.preload)."""
    sup: dict[str, Any] = {
        "backend": "native",
        # Pacing off: these fleets test other things (tests of pacing turn it on).
        "bot": {"ready": "notify", "command": demo_bot_command(*bot_extra), "logins_per_10s": 0},
        # No retries of parked processes: these fleets test other things.
        "restart": {
            "delay_sec": 0.2,
            "max_delay_sec": 2,
            "give_up_after": 5,
            "retry_parked_sec": 0,
        },
        "stop_timeout_sec": 5,
    }
    if per_channel:
        sup["bot"]["command"] = per_channel_bot_command(per_channel, script=preload)
    if preload:
        sup["bot"]["preload"] = True
        sup["bot"]["preload_modules"] = PRELOAD_MODULES
    if hub:
        sup["hub"] = {
            "enabled": True,
            "socket": "hub.sock",
            "ready": "socket",
            "command": demo_hub_command(*hub_extra),
        }
    for key, value in (supervisor or {}).items():
        if isinstance(value, dict) and isinstance(sup.get(key), dict):
            sup[key] = {**sup[key], **value}
        else:
            sup[key] = value
    doc: dict[str, Any] = {"twitch": {"channels": list(channels)}, "bot": {"name": "serda_bot"}}
    doc.update(document or {})
    doc["supervisor"] = sup
    return doc


def request_on(path: Path, obj: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
    """One JSON request on its own connection to the control socket at ``path``, as
    kissbotctl sends it; the answer line, parsed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(obj).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    answer: dict[str, Any] = json.loads(buf)
    return answer


class Supervisor:
    """A running ``kissbot-supervisor`` and the means to watch and drive it."""

    def __init__(
        self,
        workdir: Path,
        extra_args: Sequence[str] = (),
        runtime_dir: Path | None = None,
        env: dict[str, str] | None = None,
        nofile: int | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        """``wrapper``: argv that execs the rest (``unshare -m ...``): same PID, so
        ``proc.pid`` is the supervisor's."""
        self.workdir = workdir
        self.extra_args = tuple(extra_args)
        self.runtime_dir = runtime_dir or workdir / "run"
        self.control = self.runtime_dir / "control.sock"
        # prlimit, not preexec_fn: this process has reader threads.
        limit = [] if nofile is None else ["prlimit", f"--nofile={nofile}:", "--"]
        self.proc = subprocess.Popen(
            [
                *wrapper, *limit,
                SUPERVISOR, "--workdir", str(workdir), "--config", "config/config.yaml",
                "--runtime-dir", str(self.runtime_dir), "--non-interactive", *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        assert self.proc.stderr is not None
        self.log = LineWatcher(self.proc.stderr, "supervisor log", TIMEOUT)
        self.lines = self.log.lines
        self.mark = self.log.mark
        self.wait_for = self.log.wait_for
        self.seen = self.log.seen
        self.index_of = self.log.index_of

    def request(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.wait_for(r"supervisor: kissbot-supervisor .* control socket")  # it listens
        return request_on(self.control, obj)

    def status(self) -> dict[str, Any]:
        response = self.request({"cmd": "status"})
        assert response["ok"], response
        status: dict[str, Any] = response["status"]
        return status

    def bot(self, channel: str) -> dict[str, Any]:
        for bot in self.status()["bots"]:
            if bot["channel"] == channel:
                return dict(bot)
        raise AssertionError(f"{channel} not in status")

    def ctl(self, *args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
        self.wait_for(r"supervisor: kissbot-supervisor .* control socket")  # it listens
        argv = [KISSBOTCTL, "--socket", str(self.control), *args]
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code


def write_config(workdir: Path, doc: dict[str, Any]) -> Path:
    path = workdir / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    (workdir / PER_CHANNEL_SCRIPT).write_text(PER_CHANNEL_SOURCE)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def check_preload(sup: Supervisor, preload: bool) -> None:
    """With ``preload``, the bots really were forked from a fork server (no silent
    fallback to the normal start, which would make a preload test prove nothing)."""
    if preload:
        sup.wait_for(r"preload: the fork server \(PID \d+\) imported \d+ modules")
        assert not sup.seen(r"bot\.preload is on but cannot apply"), sup.lines


def preloaded_demo(doc: dict[str, Any]) -> bool:
    """A demo fleet built by ``fleet_config(preload=True)``: its fork server must serve
    (tests of preload's fallbacks build their own fleets)."""
    bot = doc.get("supervisor", {}).get("bot", {})
    return bool(bot.get("preload")) and bot.get("preload_modules") == PRELOAD_MODULES


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children_of(pid: int) -> Iterator[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return
    for part in text.split():
        yield int(part)
