"""The peer under test: supervisord from PyPI (the bench venv), one ``[program:bot_CH]`` per bot.

supervisord has no readiness protocol and no event to await from outside but
its own state, so it is polled: through its XML-RPC API (what
``supervisorctl`` speaks, over its unix socket) when its view is measured, or
not at all (only ``/proc`` and ``pids/``) when it must not be disturbed.
"""

from __future__ import annotations

import http.client
import shlex
import socket
import subprocess
import time
import xmlrpc.client
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from bench.fleets import (
    BOT_PYTHON,
    CRASH_TIMEOUT,
    LOG_BACKUPS,
    LOG_FILE_BYTES,
    RPC_TIMEOUT,
    STARTUP_TIMEOUT,
    BenchError,
    CrashSample,
    Fleet,
    bot_argv,
    clean_env,
)

RPC_POLL = 0.005  # supervisord's state, when it is observed through its API
STARTUP_POLL = 0.02


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over supervisord's unix socket (what supervisorctl speaks)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self._path, self._timeout)


class Supervisord(Fleet):
    """supervisord from PyPI (the bench venv), one [program:bot_CH] per bot."""

    name = "supervisord"
    label = "supervisord"
    has_watchdog = False  # no heartbeat of any kind: a hung program stays RUNNING

    def __init__(self, root: Path, channels: Sequence[str], bench_bin: Path) -> None:
        super().__init__(root, channels)
        self.bench_bin = bench_bin
        self.conf = root / "supervisord.conf"
        self.sock = root / "supervisor.sock"
        self.output = root / "supervisord.out"
        self._output_file: IO[bytes] | None = None
        self._rpc: xmlrpc.client.ServerProxy | None = None
        self._next_rpc = 0.0

    def bot_command(self, channel: str) -> list[str]:
        return bot_argv(BOT_PYTHON, channel)

    def config_text(self) -> str:
        r = self.root
        parts = [
            "[unix_http_server]",
            f"file={self.sock}",
            "chmod=0700",
            "",
            "[supervisord]",
            "nodaemon=true",
            f"logfile={r / 'supervisord.log'}",
            f"pidfile={r / 'supervisord.pid'}",
            f"childlogdir={r / 'childlogs'}",
            "loglevel=info",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{self.sock}",
            "",
        ]
        for channel in self.channels:
            parts += [
                f"[program:bot_{channel}]",
                f"command={shlex.join(self.bot_command(channel))}",
                f"directory={self.workdir}",
                "autostart=true",
                "autorestart=true",
                "startsecs=0",
                "stopsignal=TERM",
                "stopwaitsecs=10",
                "redirect_stderr=true",
                f"stdout_logfile={self.workdir / 'logs' / f'bot_{channel}.log'}",
                f"stdout_logfile_maxbytes={LOG_FILE_BYTES}",
                f"stdout_logfile_backups={LOG_BACKUPS}",
                "",
            ]
        return "\n".join(parts)

    def launch(self) -> None:
        (self.workdir / "logs").mkdir(parents=True)
        (self.root / "childlogs").mkdir()
        self.pids_dir.mkdir()
        self.conf.write_text(self.config_text())
        self._output_file = self.output.open("wb")
        self.launched_at = time.monotonic()
        self.proc = subprocess.Popen(
            [str(self.bench_bin / "supervisord"), "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=self._output_file,
            stderr=subprocess.STDOUT,
            text=True,  # no pipes: only for the type of Fleet.proc
            env=clean_env(),
            start_new_session=True,
        )

    def tail(self) -> str:
        try:
            return "\n".join(self.output.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""

    def rpc(self) -> Any:
        if self._rpc is None:
            self._rpc = xmlrpc.client.ServerProxy(
                "http://localhost/RPC2", transport=_UnixTransport(str(self.sock), RPC_TIMEOUT)
            )
        return self._rpc.supervisor

    def states(self) -> dict[str, tuple[str, int]]:
        """Program name -> (state name, pid), from getAllProcessInfo."""
        infos = self.rpc().getAllProcessInfo()
        return {str(i["name"]): (str(i["statename"]), int(i["pid"])) for i in infos}

    def await_fleet(self) -> dict[str, float]:
        running_at: float | None = None
        files_at: float | None = None
        deadline = self.launched_at + STARTUP_TIMEOUT
        count = len(self.channels)
        while True:
            now = time.monotonic()
            if running_at is None and self.sock.exists():
                try:
                    states = self.states()
                except (OSError, xmlrpc.client.Error, http.client.HTTPException):
                    states = {}
                if len(states) == count and all(s == "RUNNING" for s, _p in states.values()):
                    running_at = time.monotonic()
            if files_at is None and self.ready_files() >= count:
                files_at = now
            if running_at is not None and files_at is not None:
                break
            self.check_alive()
            if now > deadline:
                raise BenchError(f"{self.label}: fleet not up after {STARTUP_TIMEOUT:g} s")
            # supervisord has no readiness events to wait on: poll its state.
            time.sleep(STARTUP_POLL)
        self.remember_children()
        return {
            "startup_s": running_at - self.launched_at,
            "startup_files_s": files_at - self.launched_at,
        }

    def cli_status_argv(self) -> list[str]:
        return [str(self.bench_bin / "supervisorctl"), "-c", str(self.conf), "status"]

    def socket_status(self) -> None:
        self.rpc().getAllProcessInfo()

    def _begin_crash(self, channel: str) -> None:
        self._next_rpc = 0.0

    def _view_ready(self, channel: str, old_pid: int, now: float) -> float | None:
        if now < self._next_rpc:
            return None
        self._next_rpc = now + RPC_POLL
        info = self.rpc().getProcessInfo(f"bot_{channel}")
        if info["statename"] == "RUNNING" and int(info["pid"]) not in (0, old_pid):
            return time.monotonic()
        return None

    def _after_crash(self, sample: CrashSample) -> None:
        # Untimed check that supervisord agrees (RUNNING, with the PID we saw).
        deadline = time.monotonic() + CRASH_TIMEOUT
        while True:
            info = self.rpc().getProcessInfo(f"bot_{sample.channel}")
            if info["statename"] == "RUNNING" and int(info["pid"]) == sample.new_pid:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{self.label}: {sample.channel} is {info['statename']}")
            time.sleep(RPC_POLL)

    def _close_streams(self) -> None:
        if self._output_file is not None:
            self._output_file.close()
