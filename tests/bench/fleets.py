"""What the supervisors under test share (``ours.py``, ``ours_systemd.py``, ``peer.py``).

Each :class:`Fleet` lives in its own temporary directory: it launches its
supervisor on the same demo bots, awaits the whole fleet, answers status
requests, has single bots SIGKILLed and timed until they are back, and on
:meth:`Fleet.close` kills everything it started and removes its directory.

What "ready" means differs, and the report says so: our supervisor knows when
a bot is ready (sd_notify ``READY=1``, logged as ``CH: ready``); supervisord
has no readiness protocol, so its own figure is the time to ``RUNNING``
(``startsecs=0``). For a like-for-like figure both fleets are also timed on
the bot's own signal, the ``pids/CH.ready`` file that the demo bot writes
(with its PID) once it is operational, whoever supervises it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench import procstat

BIN = Path(sys.executable).parent
KISSBOT_SUPERVISOR = BIN / "kissbot-supervisor"
KISSBOTCTL = BIN / "kissbotctl"
# The demo bot runs on the main venv's interpreter under both supervisors.
BOT_PYTHON = sys.executable

# Quiet bots: no chat lines, no broadcast polling, no hub, no system log, so
# an idle fleet gives its supervisor nothing to do.
DEMO_BOT_FLAGS = (
    "--eventsub",
    "disabled",
    "--chat-interval",
    "0",
    "--broadcast-poll",
    "0",
    "--ping-interval",
    "0",
    "--system-log-interval",
    "0",
)

STARTUP_TIMEOUT = 120.0
CRASH_TIMEOUT = 15.0
HANG_TIMEOUT = 30.0  # the watchdog period, the kill, the restart delay and a start
STOP_TIMEOUT = 20.0
STOP_MEASURE_TIMEOUT = 300.0  # supervisord stops its programs about one a second
CLI_TIMEOUT = 30.0
RPC_TIMEOUT = 10.0
CRASH_POLL = 0.002  # /proc and pids/ polling while a crashed bot comes back
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3

# Inherited variables meant for a service manager's own child, never for ours.
_PRIVATE_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "INVOCATION_ID",
    "KISSBOT_CONTROL_SOCKET",
    "JOURNAL_STREAM",
)


class BenchError(Exception):
    """A run went wrong (a supervisor died, a timeout); the message says what."""


def bench_channels(count: int) -> list[str]:
    """``count`` valid Twitch logins: bench_bot_001, bench_bot_002, ..."""
    return [f"bench_bot_{i:03d}" for i in range(1, count + 1)]


def bot_argv(python: str, channel: str) -> list[str]:
    return [python, "-m", "kissbot_supervisor.demo", "bot", "--channel", channel, *DEMO_BOT_FLAGS]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}


def log(message: str) -> None:
    """Progress on stderr."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class CrashSample:
    """One SIGKILLed bot, timed from the kill (seconds)."""

    channel: str
    old_pid: int
    new_pid: int
    fork_s: float  # the supervisor has forked the new bot (seen in /proc)
    bot_ready_s: float  # the new bot wrote pids/CH.ready with its PID
    view_s: float | None  # the supervisor reports it (ours: "CH: ready"; supervisord: RUNNING)


@dataclass(frozen=True)
class HangSample:
    """One bot SIGSTOPped under a watchdog, timed from the SIGSTOP (seconds).

    The bot pings every half watchdog period, so its last ping came 0 to W/2
    before the SIGSTOP: the kill is due W/2 to W after it.
    """

    channel: str
    old_pid: int
    new_pid: int
    killed_s: float  # the stopped bot is gone (killed by the supervisor, or by systemd)
    fork_s: float  # its replacement exists
    bot_ready_s: float  # the new bot wrote pids/CH.ready with its PID
    view_s: float | None  # the supervisor says it is ready ("CH: ready")
    unit_active_s: float | None = None  # systemd: PID 1's "Started" entry for the unit


class Lines:
    """Lines of a text stream, each stamped with the monotonic time it was read."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._cond = threading.Condition()
        self.items: list[tuple[float, str]] = []
        self.closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            at = time.monotonic()
            with self._cond:
                self.items.append((at, line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def count(self) -> int:
        with self._cond:
            return len(self.items)

    def since(self, index: int) -> list[tuple[float, str]]:
        with self._cond:
            return self.items[index:]

    def wait_beyond(self, index: int, timeout: float) -> None:
        """Return once there are more than ``index`` lines, the stream ends, or ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.items) > index or self.closed, timeout)

    def tail(self, count: int = 30) -> str:
        with self._cond:
            return "\n".join(line for _at, line in self.items[-count:])

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Fleet:
    """What both supervisors share: the directory, the bots, crash timing and clean-up."""

    name = "?"
    label = "?"

    def __init__(self, root: Path, channels: Sequence[str]) -> None:
        self.root = root
        self.channels = list(channels)
        self.workdir = root / "work"
        self.pids_dir = self.workdir / "pids"
        self.proc: subprocess.Popen[str] | None = None
        self.launched_at = 0.0
        self._seen_children: set[int] = set()

    # -- the supervisor process ---------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise BenchError(f"{self.label} is not running (exit status {code}):\n{self.tail()}")

    def tail(self) -> str:
        return ""

    def prepare(self) -> None:
        """Set-up before the launch that is not timed (the systemd fleet boots its sandbox)."""

    def launch(self) -> None:
        raise NotImplementedError

    def await_fleet(self) -> dict[str, float]:
        """Wait for every bot; the times from the launch (s) to each kind of "all ready"."""
        raise NotImplementedError

    # -- the bots --------------------------------------------------------------

    def bot_pids(self) -> dict[str, int]:
        """Channel -> PID of the bots that are children of the supervisor now."""
        found: dict[str, int] = {}
        for child in procstat.children(self.pid):
            argv = procstat.cmdline(child)
            if "--channel" in argv:
                index = argv.index("--channel") + 1
                if index < len(argv):
                    found[argv[index]] = child
        return found

    def ready_files(self) -> int:
        try:
            return sum(1 for name in os.listdir(self.pids_dir) if name.endswith(".ready"))
        except OSError:
            return 0

    # -- status -----------------------------------------------------------------

    def cli_status_argv(self) -> list[str]:
        raise NotImplementedError

    def cli_baseline_argv(self) -> list[str] | None:
        """A command timed like the status command, to subtract from it (None: none)."""
        return None

    def others(self) -> dict[str, int]:
        """Other processes whose idle cost belongs to this fleet: label -> PID."""
        return {}

    def socket_status(self) -> None:
        """One status round trip over the supervisor's socket, without a client process."""
        raise NotImplementedError

    # -- crashes ------------------------------------------------------------------

    def _begin_crash(self, channel: str) -> None:
        """Called just before the kill (ours remembers where its log is)."""

    def _view_ready(self, channel: str, old_pid: int, now: float) -> float | None:
        """When the supervisor reported the new bot ready, if it has (None: not yet)."""
        return None

    def _after_crash(self, sample: CrashSample) -> None:
        """Called once a crash is measured (supervisord checks RUNNING when unobserved)."""

    def crash(self, channel: str, watch_view: bool) -> CrashSample:
        """SIGKILL ``channel``'s bot and time it back: forked, bot ready, supervisor's view."""
        before = self.bot_pids()
        old = before.get(channel)
        if old is None:
            raise BenchError(f"{self.label}: {channel} has no bot to kill")
        others = set(procstat.children(self.pid))
        ready_file = self.pids_dir / f"{channel}.ready"
        procstat.wait_at_rest(self.pid)
        self._begin_crash(channel)
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        deadline = killed_at + CRASH_TIMEOUT
        new_pid: int | None = None
        fork_at = file_at = view_at = None
        while True:
            now = time.monotonic()
            if new_pid is None:
                # Only this one bot is coming back: any new child is its new copy.
                fresh = [p for p in procstat.children(self.pid) if p not in others and p != old]
                if fresh:
                    new_pid, fork_at = fresh[0], now
            if new_pid is not None and file_at is None:
                try:
                    if ready_file.read_text().strip() == str(new_pid):
                        file_at = now
                except OSError:
                    pass
            if watch_view and view_at is None:
                view_at = self._view_ready(channel, old, now)
            seen_view = view_at is not None or not watch_view
            if fork_at is not None and file_at is not None and seen_view:
                break
            if now > deadline:
                raise BenchError(
                    f"{self.label}: {channel} not back {CRASH_TIMEOUT:g} s after SIGKILL "
                    f"(new pid {new_pid}, forked {fork_at is not None}, ready file "
                    f"{file_at is not None}, supervisor view {view_at is not None})\n{self.tail()}"
                )
            self.check_alive()
            time.sleep(CRASH_POLL)
        assert new_pid is not None
        assert fork_at is not None
        assert file_at is not None
        result = CrashSample(
            channel=channel,
            old_pid=old,
            new_pid=new_pid,
            fork_s=fork_at - killed_at,
            bot_ready_s=file_at - killed_at,
            view_s=None if view_at is None else view_at - killed_at,
        )
        self._after_crash(result)
        return result

    # -- hangs (a watchdog kills a stopped bot) -----------------------------------

    has_watchdog = True

    def enable_watchdog(self, seconds: float) -> float:
        """Every bot restarted with a watchdog of ``seconds``; seconds until all are ready."""
        raise NotImplementedError

    def hang(self, channel: str) -> HangSample:
        """SIGSTOP ``channel``'s bot; time its kill, the new bot, its ready file, our view."""
        old = self.bot_pids().get(channel)
        if old is None:
            raise BenchError(f"{self.label}: {channel} has no bot to stop")
        others = set(procstat.children(self.pid))
        ready_file = self.pids_dir / f"{channel}.ready"
        # No wait_at_rest: with every bot pinging, the supervisor is never at rest long.
        self._begin_crash(channel)
        stopped_at = time.monotonic()
        os.kill(old, signal.SIGSTOP)
        deadline = stopped_at + HANG_TIMEOUT
        new_pid: int | None = None
        killed_at = fork_at = file_at = view_at = None
        while True:
            now = time.monotonic()
            if killed_at is None and not procstat.alive(old):
                killed_at = now
            if new_pid is None:
                fresh = [p for p in procstat.children(self.pid) if p not in others and p != old]
                if fresh:
                    new_pid, fork_at = fresh[0], now
            if new_pid is not None and file_at is None:
                try:
                    if ready_file.read_text().strip() == str(new_pid):
                        file_at = now
                except OSError:
                    pass
            if view_at is None:
                view_at = self._view_ready(channel, old, now)
            if None not in (killed_at, fork_at, file_at, view_at):
                break
            if now > deadline:
                raise BenchError(
                    f"{self.label}: {channel} not back {HANG_TIMEOUT:g} s after SIGSTOP "
                    f"(killed {killed_at is not None}, new pid {new_pid}, ready file "
                    f"{file_at is not None}, supervisor view {view_at is not None})\n{self.tail()}"
                )
            self.check_alive()
            time.sleep(CRASH_POLL)
        assert new_pid is not None
        assert killed_at is not None
        assert fork_at is not None
        assert file_at is not None
        return HangSample(
            channel=channel,
            old_pid=old,
            new_pid=new_pid,
            killed_s=killed_at - stopped_at,
            fork_s=fork_at - stopped_at,
            bot_ready_s=file_at - stopped_at,
            view_s=None if view_at is None else view_at - stopped_at,
        )

    def stop(self) -> float:
        """SIGTERM the supervisor; seconds until it has exited and every bot is gone."""
        assert self.proc is not None
        bots = set(procstat.children(self.proc.pid)) | self._seen_children
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_MEASURE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"{self.label} still running {STOP_MEASURE_TIMEOUT:g} s after SIGTERM"
            ) from None
        # The bots are not our children: nothing to wait on but /proc.
        while any(procstat.alive(p) for p in bots):
            if time.monotonic() - started > STOP_MEASURE_TIMEOUT:
                raise BenchError(f"{self.label} exited but left bots running")
            time.sleep(0.005)
        return time.monotonic() - started

    # -- the end ------------------------------------------------------------------

    def close(self) -> None:
        """Stop the supervisor (SIGTERM, then SIGKILL), kill any bot left, remove the directory."""
        try:
            leftovers: set[int] = set(self._seen_children)
            if self.proc is not None:
                leftovers |= set(procstat.children(self.proc.pid))
                if self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    log(f"{self.label} still running {STOP_TIMEOUT:g} s after SIGTERM: SIGKILL")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(STOP_TIMEOUT)
            for pid in leftovers:
                if procstat.alive(pid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT
            while any(procstat.alive(p) for p in leftovers) and time.monotonic() < deadline:
                time.sleep(0.02)  # the gone bots are not our children: nothing to wait on
            self._close_streams()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _close_streams(self) -> None:
        pass

    def remember_children(self) -> None:
        """Note the current bots so that close() can kill them even if the supervisor died."""
        if self.proc is not None:
            self._seen_children |= set(procstat.children(self.proc.pid))
