"""Our supervisor under test on its systemd backend: ``systemctl start kissbot-supervisor``.

Each run boots its own systemd 252 in a namespace (``tests/systemd_sandbox``),
with the run's directory and the source snapshot bound inside, installs
``units/kissbot-supervisor.service`` and ``units/kissbot.slice`` with a drop-in
(ExecStart on the venv's script, the snapshot on PYTHONPATH, the run's
workdir), and starts the unit. The supervisor then runs the bots as transient
``Type=notify`` units over the sandbox's system bus.

What is read, and from where:

* the journal inside (``journalctl -f -o json`` through nsenter, systemd's and
  the supervisor's entries): when each bot unit became active (PID 1's
  "Started" entry, stamped by journald on receipt of PID 1's datagram) and
  when the supervisor said ``CH: ready`` (its stdout stream, stamped on
  receipt);
* ``/proc`` on the host: the namespace's processes are host processes too, so
  the supervisor's MainPID (a PID inside) is mapped to its host PID through
  the ``NSpid`` line of ``/proc/PID/status``, and its memory, CPU time and
  context switches are read exactly as for the native backend;
* the unit's cgroup on the host (``cgroup.procs``): when a killed bot's unit
  has a new process;
* the control socket through ``/proc/PID1/root/run/kissbot-supervisor``, a
  path into the namespace's own /run.

:meth:`close` powers the sandbox off: every process of the namespace goes with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procstat
from bench.fleets import (
    BIN,
    CLI_TIMEOUT,
    CRASH_POLL,
    CRASH_TIMEOUT,
    DEMO_BOT_FLAGS,
    HANG_TIMEOUT,
    KISSBOT_SUPERVISOR,
    KISSBOTCTL,
    STARTUP_TIMEOUT,
    STOP_MEASURE_TIMEOUT,
    BenchError,
    CrashSample,
    HangSample,
    log,
)
from bench.ours import Ours
from systemd_sandbox.sandbox import SandboxError, SystemdSandbox, unavailable_reason

REPO = Path(__file__).resolve().parents[2]
SUPERVISOR_UNIT = "kissbot-supervisor.service"
BOT_PREFIX = "kissbot-bot@"
INSIDE_RUNTIME_DIR = "/run/kissbot-supervisor"
INSIDE_CONTROL = f"{INSIDE_RUNTIME_DIR}/control.sock"
# systemd's catalogue ids: "Started UNIT" (a start job done) and "Starting UNIT".
MESSAGE_STARTED = "39f53479d3a045ac8e11786248231fbf"
MESSAGE_STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"
READY_MESSAGE = re.compile(r"^([a-z0-9_]+): ready$")
# A supervisor restarted by systemd finds the bots running and says so instead.
ADOPTED_MESSAGE = re.compile(r"^([a-z0-9_]+): adopted, already running")
START_ERROR = re.compile(r"^([a-z0-9_]+): could not start: ")
# systemd restarts a failed unit by itself after RestartUSec = restart.max_delay_sec,
# a fallback for when the supervisor is down. Well beyond restart.delay_sec, so the
# restart measured is the supervisor's own (RestartUnit after delay_sec).
FALLBACK_RESTART_SEC = 5.0
POLL = 0.01
# systemctl stop returns when the supervisor has exited; its bots go first, in parallel.
BOTS_GONE_TIMEOUT = 20.0
# The supervisor's whole journal of each run is kept here, for the post-mortems.
JOURNALS = REPO / ".bench" / "journal"
ROUTINE = re.compile(r": (ready|started \(PID \d+\)|adopted, already running.*)$")


class IncompleteStop(BenchError):
    """``systemctl stop kissbot-supervisor`` returned, but bots were still running after it."""

    def __init__(self, message: str, left: int) -> None:
        super().__init__(message)
        self.left = left


def available() -> str | None:
    """None when this machine can boot the sandbox, else why not."""
    return unavailable_reason()


@dataclass(frozen=True)
class SystemdCrashSample(CrashSample):
    """A crash under systemd; ``fork_s`` is the new process in the unit's cgroup."""

    unit_active_s: float | None = None  # PID 1's "Started" entry for the unit again


@dataclass(frozen=True)
class Entry:
    """One journal entry, as far as the benchmark cares."""

    arrived: float  # monotonic, when this process read it
    wall: float  # journald's timestamp (the source's when it has one), epoch seconds
    pid: str
    unit: str  # UNIT= of PID 1's entries about a unit
    systemd_unit: str  # the unit of the process that logged it
    message_id: str
    message: str


def _entry(at: float, raw: dict[str, Any]) -> Entry:
    def text(key: str) -> str:
        value = raw.get(key, "")
        return value if isinstance(value, str) else ""  # binary fields are lists: not ours

    stamp = text("_SOURCE_REALTIME_TIMESTAMP") or text("__REALTIME_TIMESTAMP") or "0"
    return Entry(
        arrived=at,
        wall=int(stamp) / 1e6,
        pid=text("_PID"),
        unit=text("UNIT"),
        systemd_unit=text("_SYSTEMD_UNIT"),
        message_id=text("MESSAGE_ID"),
        message=text("MESSAGE"),
    )


class Journal:
    """``journalctl -f -o json`` inside the sandbox: PID 1's and the supervisor's entries."""

    def __init__(self, sandbox: SystemdSandbox, since: float) -> None:
        self._cond = threading.Condition()
        self.entries: list[Entry] = []
        self.proc = subprocess.Popen(
            [
                "nsenter",
                "-t",
                str(sandbox.pid1),
                "-m",
                "-p",
                "-u",
                "--",
                "journalctl",
                "-f",
                "-n",
                "all",
                "-o",
                "json",
                "--no-pager",
                f"--since=@{since:.6f}",
                f"_SYSTEMD_UNIT={SUPERVISOR_UNIT}",
                "+",
                "_PID=1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
            start_new_session=True,  # nsenter forks journalctl: killed as a group
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            at = time.monotonic()
            try:
                raw = json.loads(line)
            except ValueError:
                continue  # the last line of a killed journalctl
            with self._cond:
                self.entries.append(_entry(at, raw))
                self._cond.notify_all()

    def count(self) -> int:
        with self._cond:
            return len(self.entries)

    def since(self, index: int) -> list[Entry]:
        with self._cond:
            return self.entries[index:]

    def wait_beyond(self, index: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: len(self.entries) > index, timeout)

    def tail(self, count: int = 30) -> str:
        with self._cond:
            return "\n".join(
                f"{e.unit or e.systemd_unit}: {e.message}" for e in self.entries[-count:]
            )

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _supervisor_line(entry: Entry, pattern: re.Pattern[str]) -> str | None:
    if entry.systemd_unit != SUPERVISOR_UNIT or entry.pid == "1":
        return None
    match = pattern.match(entry.message)
    return match[1] if match else None


def _ready_channel(entry: Entry) -> str | None:
    return _supervisor_line(entry, READY_MESSAGE)


def _started_channel(entry: Entry) -> str | None:
    """The channel of a bot unit PID 1 reports active ("Started"), else None."""
    if entry.pid != "1" or entry.message_id != MESSAGE_STARTED:
        return None
    if entry.unit.startswith(BOT_PREFIX) and entry.unit.endswith(".service"):
        return entry.unit[len(BOT_PREFIX) : -len(".service")]
    return None


def ns_pid(host_pid: int) -> int | None:
    """The PID of a host process inside its own (innermost) PID namespace."""
    try:
        for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def unified_cgroup(host_pid: int) -> Path | None:
    """The process's cgroup directory in the cgroup2 hierarchy, as a host path."""
    mounts = _cgroup2_mounts()
    if not mounts:
        return None
    mount = mounts[0]
    try:
        for line in Path(f"/proc/{host_pid}/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return mount / line[3:].lstrip("/")
    except OSError:
        return None
    return None


def _cgroup2_mounts() -> list[Path]:
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            found.append(Path(fields[1]))
    return found


def _cgroup_pids(cgroup: Path) -> list[int]:
    try:
        return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []  # between two runs of the unit systemd removes and re-creates it


class OursSystemd(Ours):
    """kissbot-supervisor, systemd backend, as the unit ``kissbot-supervisor.service``."""

    name = "systemd"
    label = "kissbot-supervisor (systemd)"

    def __init__(
        self,
        root: Path,
        channels: Sequence[str],
        restart_delay: float,
        snapshot: Path,
        hub: bool = False,
    ) -> None:
        super().__init__(root, channels, restart_delay)
        self.snapshot = snapshot
        self.hub = hub
        if hub:
            self.name, self.label = "systemd_hub", "kissbot-supervisor (systemd, hub)"
        self.sandbox = SystemdSandbox()
        self.journal: Journal | None = None
        self.start_proc: subprocess.Popen[str] | None = None
        self.launched_wall = 0.0
        self.host_pid: int | None = None
        self.version = ""

    # -- the sandbox and the unit ------------------------------------------------

    def config(self) -> dict[str, Any]:
        flags = list(DEMO_BOT_FLAGS)
        if self.hub:  # the bots talk to the hub: --eventsub hub --hub-socket ...
            at = flags.index("--eventsub")
            flags[at : at + 2] = ["--eventsub", "{eventsub}", "--hub-socket", "{hub_socket}"]
        # The units get no environment from the supervisor: env puts the snapshot first
        # on the bots' path too (it execs the interpreter, so the unit's MainPID is it).
        command = [
            "/usr/bin/env",
            f"PYTHONPATH={self.snapshot}",
            "{supervisor_python}",
            "-m",
            "kissbot_supervisor.demo",
            "bot",
            "--channel",
            "{channel}",
            *flags,
        ]
        supervisor: dict[str, Any] = {
            "backend": "systemd",
            "bot": self.bot_settings(command),
            "restart": {
                "delay_sec": self.restart_delay,
                "max_delay_sec": FALLBACK_RESTART_SEC,
                "give_up_after": 0,
            },
        }
        if self.hub:
            supervisor["hub"] = {
                "enabled": True,
                "socket": "hub.sock",
                "ready": "socket",
                "command": [
                    "/usr/bin/env",
                    f"PYTHONPATH={self.snapshot}",
                    "{supervisor_python}",
                    "-m",
                    "kissbot_supervisor.demo",
                    "hub",
                    "--config",
                    "{config}",
                    "--db",
                    "{db}",
                    "--socket",
                    "{hub_socket}",
                ],
            }
        return {
            "twitch": {"channels": self.channels},
            "bot": {"name": "serda_bot"},
            "supervisor": supervisor,
        }

    def prepare(self) -> None:
        """Boot the sandbox, install the units, start the system bus and the journal reader."""
        import yaml

        config = self.workdir / "config" / "config.yaml"
        config.parent.mkdir(parents=True)
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        # The run's directory and the snapshot live under /tmp, which is a tmpfs inside.
        binds = [self.root, self.snapshot]
        for path in (REPO, BIN.parent.resolve()):
            if path.is_relative_to("/tmp") and not any(path.is_relative_to(b) for b in binds):
                binds.append(path)
        self.sandbox.start(binds=binds)
        sandbox = self.sandbox
        self.version = sandbox.version
        for name in (SUPERVISOR_UNIT, "kissbot.slice"):
            (sandbox.units_dir / name).write_text((REPO / "units" / name).read_text())
        dropin = sandbox.units_dir / f"{SUPERVISOR_UNIT}.d"
        dropin.mkdir()
        (dropin / "bench.conf").write_text(
            "[Service]\n"
            "ExecStart=\n"
            f"ExecStart={KISSBOT_SUPERVISOR} --backend systemd --non-interactive "
            f"--workdir {self.workdir}\n"
            f"WorkingDirectory={self.workdir}\n"
            "ReadWritePaths=\n"
            f"ReadWritePaths={self.workdir}\n"
            f"Environment=PYTHONPATH={self.snapshot}\n"
        )
        sandbox.daemon_reload()
        # A real machine has its system bus up; the sandbox activates it on first use.
        sandbox.systemctl("start", "dbus.service")
        self.control = Path(f"/proc/{sandbox.pid1}/root{INSIDE_CONTROL}")
        since = time.time()
        self.journal = Journal(sandbox, since)

    def launch(self) -> None:
        self.launched_wall = time.time()
        self.launched_at = time.monotonic()
        self.start_proc = subprocess.Popen(
            [
                "nsenter",
                "-t",
                str(self.sandbox.pid1),
                "-m",
                "-p",
                "-u",
                "--",
                "systemctl",
                "start",
                SUPERVISOR_UNIT,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
        )

    def tail(self) -> str:
        return "" if self.journal is None else self.journal.tail()

    def await_fleet(self) -> dict[str, float]:
        assert self.journal is not None
        assert self.start_proc is not None
        wanted = set(self.channels)
        units: dict[str, float] = {}
        ready: dict[str, float] = {}
        adopted: set[str] = set()
        start_errors = 0
        files_at: float | None = None
        start_done: float | None = None
        starting: float | None = None
        seen = 0
        deadline = self.launched_at + STARTUP_TIMEOUT
        while True:
            for entry in self.journal.since(seen):
                seen += 1
                if channel := _started_channel(entry):
                    if channel in wanted:
                        units.setdefault(channel, entry.wall)
                elif channel := _ready_channel(entry):
                    if channel in wanted:
                        ready.setdefault(channel, entry.wall)
                elif channel := _supervisor_line(entry, ADOPTED_MESSAGE):
                    if channel in wanted and channel not in ready:
                        ready[channel] = entry.wall
                        adopted.add(channel)
                elif _supervisor_line(entry, START_ERROR):
                    start_errors += 1
                elif (
                    entry.pid == "1"
                    and entry.unit == SUPERVISOR_UNIT
                    and entry.message_id == MESSAGE_STARTING
                    and starting is None
                ):
                    starting = entry.wall
            now = time.monotonic()
            if start_done is None and self.start_proc.poll() is not None:
                start_done = now
                if self.start_proc.returncode != 0:
                    assert self.start_proc.stderr is not None
                    raise BenchError(
                        f"{self.label}: systemctl start failed: "
                        f"{self.start_proc.stderr.read().strip()}\n{self.tail()}"
                    )
            if files_at is None and self.ready_files() >= len(wanted):
                files_at = now
            if (
                len(units) == len(wanted)
                and len(ready) == len(wanted)
                and files_at is not None
                and start_done is not None
            ):
                break
            if now > deadline:
                raise BenchError(
                    f"{self.label}: {len(units)}/{len(wanted)} units active, {len(ready)} "
                    f"ready after {STARTUP_TIMEOUT:g} s\n{self.tail()}"
                )
            self.journal.wait_beyond(seen, POLL)
        self._check_active_units()
        self.host_pid = self._supervisor_host_pid()
        restarts = self.sandbox.systemctl(
            "show", SUPERVISOR_UNIT, "-p", "NRestarts", "--value"
        ).stdout.strip()
        if restarts not in ("", "0") or adopted or start_errors:
            log(
                f"{self.label}: the supervisor was restarted {restarts} times, "
                f"{start_errors} start errors, {len(adopted)} bots ready only by adoption"
            )
        figures = {
            "supervisor_restarts": float(restarts or 0),
            "start_errors": float(start_errors),
            "adopted_at_startup": float(len(adopted)),
            "startup_s": max(ready.values()) - self.launched_wall,
            "startup_units_s": max(units.values()) - self.launched_wall,
            "startup_files_s": files_at - self.launched_at,
            "systemctl_start_s": start_done - self.launched_at,
        }
        if starting is not None:
            figures["supervisor_starting_s"] = starting - self.launched_wall
        return figures

    def _check_active_units(self) -> None:
        """Cross-check the journal with the manager's view (after the timing)."""
        out = self.sandbox.systemctl(
            "list-units", f"{BOT_PREFIX}*", "--state=active", "--no-legend", "--plain"
        ).stdout
        active = {line.split()[0] for line in out.splitlines() if line.strip()}
        missing = {f"{BOT_PREFIX}{c}.service" for c in self.channels} - active
        if missing:
            raise BenchError(f"{self.label}: units not active: {sorted(missing)[:5]}")

    def _main_pid(self, unit: str) -> int:
        out = self.sandbox.systemctl("show", unit, "-p", "MainPID", "--value").stdout
        return int(out.strip() or 0)

    def host_pids(self) -> dict[int, int]:
        """PID inside -> host PID, for every process of the namespace."""
        found: dict[int, int] = {}
        for host in self.sandbox.namespace_pids():
            inside = ns_pid(host)
            if inside is not None:
                found[inside] = host
        return found

    def _supervisor_host_pid(self) -> int:
        inside = self._main_pid(SUPERVISOR_UNIT)
        host = self.host_pids().get(inside)
        if not inside or host is None:
            raise BenchError(f"{self.label}: no host PID for the supervisor's MainPID {inside}")
        return host

    # -- what run.py reads ------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.host_pid is not None
        return self.host_pid

    def check_alive(self) -> None:
        if not self.sandbox.running:
            raise BenchError(f"{self.label}: the sandbox is down\n{self.tail()}")
        if self.host_pid is not None and not procstat.alive(self.host_pid):
            raise BenchError(f"{self.label}: the supervisor is not running\n{self.tail()}")

    def bot_pids(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for host in self.sandbox.namespace_pids():
            argv = procstat.cmdline(host)
            if "--channel" in argv and "kissbot_supervisor.demo" in argv:
                index = argv.index("--channel") + 1
                if index < len(argv):
                    found[argv[index]] = host
        return found

    def others(self) -> dict[str, int]:
        """Host PIDs of the sandbox's own service manager, journal and bus."""
        found = {"pid1": self.sandbox.pid1}
        for host in self.sandbox.namespace_pids():
            argv = procstat.cmdline(host)
            if not argv:
                continue
            program = Path(argv[0]).name
            if program == "systemd-journald":
                found["journald"] = host
            elif program == "dbus-daemon":
                found["dbus"] = host
        return found

    def cli_status_argv(self) -> list[str]:
        return self._nsenter(str(KISSBOTCTL), "--socket", INSIDE_CONTROL, "status")

    def cli_baseline_argv(self) -> list[str] | None:
        return self._nsenter("/bin/true")

    def _nsenter(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.sandbox.pid1), "-m", "-p", "-u", "--", *argv]

    # -- crashes ------------------------------------------------------------------------

    def crash(self, channel: str, watch_view: bool) -> SystemdCrashSample:
        """SIGKILL the bot's MainPID; time the new process, its ready file, the unit, our view."""
        assert self.journal is not None
        old = self.bot_pids().get(channel)
        old_inside = None if old is None else ns_pid(old)
        if old is None or old_inside is None:
            raise BenchError(f"{self.label}: {channel} has no bot to kill")
        cgroup = unified_cgroup(old)
        if cgroup is None:
            raise BenchError(f"{self.label}: no cgroup for {channel}'s bot {old}")
        ready_file = self.pids_dir / f"{channel}.ready"
        procstat.wait_at_rest(self.pid)
        mark = self.journal.count()
        killed_wall = time.time()
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)  # the host PID of the unit's MainPID
        deadline = killed_at + CRASH_TIMEOUT
        new: int | None = None
        new_inside: int | None = None
        fork_at = file_at = None
        unit_at = view_at = None
        seen = mark
        while True:
            now = time.monotonic()
            if new is None:
                fresh = [p for p in _cgroup_pids(cgroup) if p != old]
                if fresh:
                    new, fork_at = fresh[0], now
                    new_inside = ns_pid(new)
            if new_inside is not None and file_at is None:
                try:
                    if ready_file.read_text().strip() == str(new_inside):
                        file_at = now
                except OSError:
                    pass
            for entry in self.journal.since(seen):
                seen += 1
                if unit_at is None and _started_channel(entry) == channel:
                    unit_at = entry.wall - killed_wall
                if view_at is None and _ready_channel(entry) == channel:
                    view_at = entry.wall - killed_wall
            if None not in (fork_at, file_at, unit_at, view_at):
                break
            if now > deadline:
                raise BenchError(
                    f"{self.label}: {channel} not back {CRASH_TIMEOUT:g} s after SIGKILL "
                    f"(new process {new}, ready file {file_at is not None}, unit active "
                    f"{unit_at is not None}, supervisor view {view_at is not None})\n{self.tail()}"
                )
            self.check_alive()
            time.sleep(CRASH_POLL)
        assert new_inside is not None
        assert fork_at is not None
        assert file_at is not None
        # The unit is back with a new MainPID: the manager's own word (after the timing).
        main = self._main_pid(f"{BOT_PREFIX}{channel}.service")
        if main != new_inside:
            raise BenchError(
                f"{self.label}: {channel}: MainPID {main}, expected the new process {new_inside}"
            )
        return SystemdCrashSample(
            channel=channel,
            old_pid=old_inside,
            new_pid=new_inside,
            fork_s=fork_at - killed_at,
            bot_ready_s=file_at - killed_at,
            view_s=view_at,
            unit_active_s=unit_at,
        )

    # -- hangs ----------------------------------------------------------------------------

    def _ready_mark(self) -> int:
        assert self.journal is not None
        return self.journal.count()

    def _await_ready_since(self, mark: int, deadline: float) -> None:
        assert self.journal is not None
        wanted, seen = set(self.channels), mark
        ready: set[str] = set()
        while ready != wanted:
            for entry in self.journal.since(seen):
                seen += 1
                channel = _ready_channel(entry)
                if channel in wanted:
                    ready.add(channel)
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.label}: {len(ready)}/{len(wanted)} bots ready again after "
                    f"the reload\n{self.tail()}"
                )
            self.journal.wait_beyond(seen, POLL)

    def hang(self, channel: str) -> HangSample:
        """SIGSTOP the unit's MainPID; systemd's watchdog (WatchdogUSec) kills it (SIGABRT,
        with a SIGCONT so that a stopped process sees it) and the supervisor restarts it."""
        assert self.journal is not None
        old = self.bot_pids().get(channel)
        old_inside = None if old is None else ns_pid(old)
        if old is None or old_inside is None:
            raise BenchError(f"{self.label}: {channel} has no bot to stop")
        cgroup = unified_cgroup(old)
        if cgroup is None:
            raise BenchError(f"{self.label}: no cgroup for {channel}'s bot {old}")
        ready_file = self.pids_dir / f"{channel}.ready"
        mark = self.journal.count()
        stopped_wall = time.time()
        stopped_at = time.monotonic()
        os.kill(old, signal.SIGSTOP)
        deadline = stopped_at + HANG_TIMEOUT
        new: int | None = None
        new_inside: int | None = None
        killed_at = fork_at = file_at = None
        unit_at = view_at = None
        seen = mark
        while True:
            now = time.monotonic()
            if killed_at is None and not procstat.alive(old):
                killed_at = now
            if new is None:
                fresh = [p for p in _cgroup_pids(cgroup) if p != old]
                if fresh:
                    new, fork_at = fresh[0], now
                    new_inside = ns_pid(new)
            if new_inside is not None and file_at is None:
                try:
                    if ready_file.read_text().strip() == str(new_inside):
                        file_at = now
                except OSError:
                    pass
            for entry in self.journal.since(seen):
                seen += 1
                if unit_at is None and _started_channel(entry) == channel:
                    unit_at = entry.wall - stopped_wall
                if view_at is None and _ready_channel(entry) == channel:
                    view_at = entry.wall - stopped_wall
            if None not in (killed_at, fork_at, file_at, unit_at, view_at):
                break
            if now > deadline:
                raise BenchError(
                    f"{self.label}: {channel} not back {HANG_TIMEOUT:g} s after SIGSTOP "
                    f"(killed {killed_at is not None}, new process {new}, ready file "
                    f"{file_at is not None}, unit active {unit_at is not None}, "
                    f"supervisor view {view_at is not None})\n{self.tail()}"
                )
            self.check_alive()
            time.sleep(CRASH_POLL)
        assert new_inside is not None
        assert killed_at is not None
        assert fork_at is not None
        assert file_at is not None
        return HangSample(
            channel=channel,
            old_pid=old_inside,
            new_pid=new_inside,
            killed_s=killed_at - stopped_at,
            fork_s=fork_at - stopped_at,
            bot_ready_s=file_at - stopped_at,
            view_s=view_at,
            unit_active_s=unit_at,
        )

    # -- the end --------------------------------------------------------------------------

    def remember_children(self) -> None:
        """Nothing to remember: powering the sandbox off ends every process in it."""

    def stop(self) -> float:
        """``systemctl stop kissbot-supervisor``: seconds until it and every bot are gone."""
        started = time.monotonic()
        self.sandbox.systemctl("stop", SUPERVISOR_UNIT, timeout=STOP_MEASURE_TIMEOUT)
        while bots := self.bot_pids():
            if time.monotonic() - started > BOTS_GONE_TIMEOUT:
                raise IncompleteStop(
                    f"{self.label} stopped but left {len(bots)} bots running "
                    f"{BOTS_GONE_TIMEOUT:g} s later; the supervisor's last lines:\n"
                    + self.supervisor_lines(12),
                    len(bots),
                )
            time.sleep(POLL)
        elapsed = time.monotonic() - started
        left = self.sandbox.systemctl("list-units", f"{BOT_PREFIX}*", "--no-legend").stdout
        if left.strip():
            raise BenchError(f"{self.label}: bot units left after the stop:\n{left}")
        return elapsed

    def supervisor_journal(self) -> str:
        """The supervisor unit's whole journal in this sandbox (PID 1's lines about it too)."""
        return self.sandbox.run(
            "journalctl",
            "--no-pager",
            "-o",
            "short-monotonic",
            f"_SYSTEMD_UNIT={SUPERVISOR_UNIT}",
            "+",
            f"UNIT={SUPERVISOR_UNIT}",
            check=False,
        ).stdout

    def supervisor_lines(self, count: int) -> str:
        """Its last ``count`` lines that are not one bot's routine start."""
        lines = [x for x in self.supervisor_journal().splitlines() if not ROUTINE.search(x)]
        return "\n".join(lines[-count:])

    def save_journal(self, size: int, repeat: int) -> Path | None:
        """Keep the supervisor's journal of this run under ``.bench/journal/``."""
        if not self.sandbox.running:
            return None
        JOURNALS.mkdir(parents=True, exist_ok=True)
        path = JOURNALS / f"{self.name}-{size}-r{repeat + 1}.txt"
        path.write_text(self.supervisor_journal())
        return path

    def close(self) -> None:
        try:
            if self.start_proc is not None:
                if self.start_proc.poll() is None:
                    self.start_proc.kill()
                self.start_proc.wait(CLI_TIMEOUT)
                if self.start_proc.stderr is not None:
                    self.start_proc.stderr.close()
            if self.journal is not None:
                self.journal.close()
            try:
                self.sandbox.stop()  # every process of the namespace dies with its PID 1
            except SandboxError as e:
                log(f"{self.label}: {e}")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
