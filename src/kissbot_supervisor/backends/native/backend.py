"""The native backend: carries out the core's actions with fork/exec and reports events.

It decides nothing. ``Spawn`` becomes a process in its own group (after the
per-channel lock, the stale-flag clean-up and the credential file); ``Kill``
becomes a signal. What happens to the children comes back as core events:
exits through a pidfd per child (noticed at once, no SIGCHLD polling),
sd_notify messages through :class:`~.notifyserver.NotifyServer`, readiness
files through inotify, and the hub socket through a connect probe while the
hub starts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ... import core
from ...core.records import field, record
from ...kissbot.readiness import ReadinessWatcher, remove_stale_flags
from ...protocol import NoteKind
from ...runtime.fs import base_of, make_dirs, open_regular, read_regular
from ...runtime.loop import Loop, Timer, read_pipe
from ...runtime.procinfo import command_line, processes_with_env, rss_bytes
from ...tokens.states import CredentialPending, TokenError
from .logfiles import LogFile
from .notifyserver import Notification, NotifyServer
from .spawner import Spawner, SpawnError, child_environment, read_report

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ...runtime.log import Log
    from .preload import Preloader


IGNORED_LOG_SEC = 10.0  # at most one 'ignored a message' line this often
LEFTOVER_WAIT_SEC = 2.0  # for a predecessor's leftovers to die, at start
# How often the resident memory of a process with bot.memory_max is sampled: a
# timer that exists only while such a process runs (no wake-up otherwise).
MEMORY_SAMPLE_SEC = 5.0


@record
class NativeOptions:
    workdir: Path
    runtime_dir: Path
    logs_dir: Path
    log_max_bytes: int
    log_backups: int
    hub_socket: Path
    # The descriptor limit the supervisor was given, before it raised its own:
    # what the children get (None: the one in force).
    child_nofile: tuple[int, int] | None = None
    hub_db: Path | None = None  # where hub.ready: db reads hub_state
    # bot.preload: bots forked from a fork server (preload.py) that imports these
    # modules too; None: preload is off (its modules are then never imported).
    preload_modules: tuple[str, ...] | None = None
    memory_merge: bool = False  # with preload: the forked bots' memory open to KSM


@record(frozen=False)
class Running:
    name: str
    pid: int
    pidfd: int
    spec: core.ProcessSpec
    report_fd: int = -1  # the exec report pipe, until EOF
    exec_error: str | None = None


@record(frozen=False)
class Output:
    fd: int
    log: LogFile


@record(frozen=False)
class _Slot:
    """Per-process resources that outlive one incarnation."""

    log: LogFile
    lock_fd: int | None = None
    outputs: list[Output] = field(factory=list)
    # Its process is gone for good (a reload removed it): the log file closes once
    # the last output pipe, which a descendant may hold open, has been read to its end.
    released: bool = False


# Reads of a process's pipe at its exit, for its last words (64 KiB each).
DRAIN_READS = 16
# Longest run of spawns in one turn of the loop. A fleet's start is hundreds of
# forks (20 ms each with their files and locks on two cores): done in one call,
# the notify socket's queue (512 datagrams) overflowed, READY=1 was lost and
# healthy bots were killed as not ready; in slices, the loop reads between them.
SPAWN_SLICE_SEC = 0.05


def _alive(pid: int) -> bool:
    """Running (not a zombie, whose locks are already released)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _words(e: Exception) -> str:
    """An exception as words: ``Too many open files: /path``, not ``[Errno 24] ...``."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return str(e)


class NativeBackend:
    name = "native"

    def __init__(
        self,
        loop: Loop,
        options: NativeOptions,
        emit: Callable[[core.Event], None],
        log: Log,
        credential: Callable[[str, Path, Callable[[], None] | None], Path | None],
    ) -> None:
        self.loop = loop
        self.opt = options
        self._emit = emit
        self._log = log  # the supervisor-level log lines
        self._credential = credential
        self._spawner = Spawner(options.child_nofile)
        self._running: dict[str, Running] = {}
        self._by_pid: dict[int, str] = {}
        self._slots: dict[str, _Slot] = {}
        self._draining: list[_Slot] = []  # released, an output pipe still open
        self._to_spawn: deque[core.ProcessSpec] = deque()
        self._spawn_timer: Timer | None = None
        self._memory_timer: Timer | None = None
        self._ignored_said_at: float | None = None
        self._ignored_since = 0
        self.pids_dir = options.workdir / "pids"
        make_dirs(self.pids_dir, options.workdir, symlink_ok=True)
        options.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._remove_leftover_credentials()
        self._end_leftover_processes(options.runtime_dir / "notify.sock")
        self.notify = NotifyServer(options.runtime_dir / "notify.sock")
        loop.add_reader(self.notify.fileno(), self._on_notify)
        self.readiness = ReadinessWatcher(
            loop,
            self.pids_dir,
            options.hub_socket,
            lambda name: self._emit(core.Ready(name)),
            log,
            lambda name, why: self._emit(core.Waiting(name, why)),
            options.hub_db,
            lambda name: self._emit(core.WatchdogPing(name)),
        )
        self.base_env = dict(os.environ)
        self._preload: Preloader | None = None
        # The supervisor's other children (hook runs, a token worker): never a bot.
        self.other_children: Callable[[], set[int]] = set
        if options.preload_modules is not None:
            from .preload import LOG_NAME, Preloader

            self._preload = Preloader(
                loop,
                self._spawner,
                options.preload_modules,
                options.memory_merge,
                options.workdir,
                self._log_file(LOG_NAME, "preload"),
                # The bots' environment but what differs per bot: the interpreter reads
                # PYTHON* variables at its start, the fork server's. NOTIFY_SOCKET marks
                # it (and the bots forked from it) as this fleet's for a successor.
                lambda: child_environment(
                    self.base_env,
                    {"NOTIFY_SOCKET": str(self.notify.path), "KISSBOT_PROCESS": "fork-server"},
                ),
                log,
                self._resume_spawns,
            )

    # -- carrying out actions ----------------------------------------------

    def execute(self, action: core.Action) -> None:
        match action:
            case core.Spawn(spec):
                self._to_spawn.append(spec)
                if self._spawn_timer is None:
                    self._spawn_timer = self.loop.call_later(0.0, self._spawn_some)
            case core.Kill(name, pid, sig, group):
                self._kill(name, pid, sig, group)
            case core.Release(name):
                self._release(name)
            case _:
                pass

    def _log_file(self, file_name: str, name: str) -> LogFile:
        return LogFile(
            self.opt.logs_dir / file_name,
            self.opt.log_max_bytes,
            self.opt.log_backups,
            lambda message: self._log.info(name, message),
            base=base_of(self.opt.logs_dir, self.opt.workdir),
        )

    def _slot(self, name: str) -> _Slot:
        slot = self._slots.get(name)
        if slot is None:
            slot = self._slots[name] = _Slot(log=self._log_file(f"{name}.log", name))
        return slot

    def _spawn_some(self) -> None:
        """Spawn what is waiting for up to SPAWN_SLICE_SEC, then let the loop read."""
        self._spawn_timer = None
        until = self.loop.now() + SPAWN_SLICE_SEC
        while self._to_spawn:
            if self._preload is not None and self._preload.holds(self._to_spawn[0]):
                return  # the fork server is importing: _resume_spawns once it is done
            spec = self._to_spawn.popleft()
            try:
                self._spawn(spec)
            except CredentialPending:
                # The token worker writes its credential file: this start and those
                # after it wait for _resume_spawns, the loop does not.
                self._to_spawn.appendleft(spec)
                return
            if self.loop.now() >= until:
                break
        self._resume_spawns()

    def _resume_spawns(self) -> None:
        if self._to_spawn and self._spawn_timer is None:
            self._spawn_timer = self.loop.call_later(0.0, self._spawn_some)

    def _spawn(self, spec: core.ProcessSpec) -> None:
        name = spec.name
        try:
            self._take_lock(name)
            if not spec.is_hub:
                self._check_outside_copy(name)
                remove_stale_flags(self.pids_dir, name)
            env = self._environment(spec)
            child = None
            if self._preload is not None:  # None: this one starts the normal way
                child = self._preload.spawn(
                    spec,
                    env=env,
                    pass_fds=self._lock_fds(name),
                    known=self._by_pid.keys() | self.other_children(),
                )
            if child is None:
                child = self._spawner.spawn(
                    spec.argv,
                    cwd=str(self.opt.workdir),
                    env=env,
                    pass_fds=self._lock_fds(name),
                    watchdog_pid=spec.watchdog_sec > 0 and not spec.liveness,
                    oom_score_adjust=spec.oom_score_adjust,
                )
        except (SpawnError, OSError, TokenError) as e:
            self._spawn_failed(name, _words(e))
            return
        except CredentialPending:
            raise
        except Exception as e:  # a bug of ours: this start fails, not the bot's record
            self._spawn_failed(name, f"internal error: {e!r}")
            return
        slot = self._slot(name)
        try:
            pidfd = os.pidfd_open(child.pid)
        except OSError as e:
            # It runs, but could not be watched: end it rather than lose sight of it.
            with contextlib.suppress(OSError):
                os.killpg(child.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)
            for fd in (child.output_fd, child.report_fd):
                os.close(fd)
            self._spawn_failed(name, f"cannot watch it: {_words(e)}")
            return
        running = self._running[name] = Running(name, child.pid, pidfd, spec, child.report_fd)
        self.loop.add_reader(child.report_fd, lambda: self._on_report(running))
        self._by_pid[child.pid] = name
        self.loop.add_reader(pidfd, lambda: self._on_exit(name))
        out = Output(child.output_fd, slot.log)
        slot.outputs.append(out)
        self.loop.add_reader(out.fd, lambda: self._read_output(slot, out))
        slot.log.note(f"started (PID {child.pid}): {' '.join(spec.argv)}", self._wall())
        self._emit(core.Spawned(name, child.pid))
        if spec.memory_max is not None and self._memory_timer is None:
            self._memory_timer = self.loop.call_later(MEMORY_SAMPLE_SEC, self._sample_memory)
        self.readiness.watch(
            name, spec.ready, lambda: self._main_pid(name), every=spec.liveness_every
        )

    def _sample_memory(self) -> None:
        self._memory_timer = None
        capped = [r for r in self._running.values() if r.spec.memory_max is not None]
        for r in capped:
            rss = rss_bytes(r.pid)
            if rss is not None:
                self._emit(core.MemorySample(r.name, r.pid, rss))
        if capped:
            self._memory_timer = self.loop.call_later(MEMORY_SAMPLE_SEC, self._sample_memory)

    def _spawn_failed(self, name: str, why: str) -> None:
        # Out of descriptors, even the clean-up may fail: the failure is what matters.
        with contextlib.suppress(OSError):
            self._remove_credential(name)
        self._emit(core.SpawnFailed(name, why))

    def _main_pid(self, name: str) -> int | None:
        running = self._running.get(name)
        return None if running is None else running.pid

    def _environment(self, spec: core.ProcessSpec) -> dict[str, str]:
        extra = {"NOTIFY_SOCKET": str(self.notify.path), "KISSBOT_PROCESS": spec.name}
        if spec.watchdog_sec > 0 and not spec.liveness:  # liveness: the supervisor checks
            extra["WATCHDOG_USEC"] = str(int(spec.watchdog_sec * 1_000_000))
        directory = self._credentials_dir(spec.name)
        if self._credential(spec.name, directory, self._resume_spawns) is not None:
            extra["CREDENTIALS_DIRECTORY"] = str(directory)
        return child_environment(self.base_env, extra)

    def _remove_leftover_credentials(self) -> None:
        """Token files a predecessor killed with SIGKILL left behind (no clean-up ran):
        nothing of a native fleet survives it (PR_SET_PDEATHSIG), so none is in use."""
        from ...tokens.states import remove_credentials

        try:
            entries = list(os.scandir(self.opt.runtime_dir / "credentials"))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                remove_credentials(Path(entry.path))

    def _end_leftover_processes(self, notify_path: Path) -> None:
        """Kill what a predecessor killed with SIGKILL left running: its bots died
        with it (PR_SET_PDEATHSIG), but not their own children, which keep the
        channel's lock (inherited) and would park the channel as "already
        running". Every process of a fleet carries this supervisor's notify socket
        (the same path: the runtime directory is this workdir's) in its environment."""
        pids = processes_with_env("NOTIFY_SOCKET", str(notify_path))
        if not pids:
            return
        said = ", ".join(f"{pid} ({command_line(pid, 60)})" for pid in pids[:10])
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self._log.warning(
            "supervisor",
            f"killed {len(pids)} processes a previous supervisor of this workdir left "
            f"running (they held its channels' locks): {said}",
        )
        # Their locks go with them: wait (briefly) for the kernel to be done.
        deadline = self.loop.now() + LEFTOVER_WAIT_SEC
        while any(_alive(pid) for pid in pids) and self.loop.now() < deadline:
            time.sleep(0.01)  # start-up only; a SIGKILLed process is gone in ms

    def _credentials_dir(self, name: str) -> Path:
        return self.opt.runtime_dir / "credentials" / name

    def _remove_credential(self, name: str) -> None:
        from ...tokens.states import remove_credentials

        remove_credentials(self._credentials_dir(name))

    def _take_lock(self, name: str) -> None:
        """One copy per channel, across supervisors: an flock the child inherits."""
        slot = self._slot(name)
        if slot.lock_fd is not None:
            return
        path = self.pids_dir / f"{name}.lock"
        # The bot inherits this descriptor: a symlink or a hard link planted there
        # must never hand it another file (runtime/fs.py's rule, and one link only).
        fd = open_regular(path, os.O_RDWR | os.O_CREAT, 0o644, base=self.opt.workdir)
        try:
            if os.fstat(fd).st_nlink != 1:
                raise SpawnError(f"{path} has other hard links; refusing to lock it")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except SpawnError:
            os.close(fd)
            raise
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise SpawnError(
                    f"another copy of {name} is already running ({path} is locked by "
                    "another supervisor or its child); refusing to start a second one"
                ) from None
            raise
        slot.lock_fd = fd

    def _lock_fds(self, name: str) -> tuple[int, ...]:
        fd = self._slot(name).lock_fd
        return () if fd is None else (fd,)

    def _check_outside_copy(self, name: str) -> None:
        """A bot started by the old supervisor or by hand shows in pids/CH.pid."""
        try:
            raw = read_regular(self.pids_dir / f"{name}.pid", 64, base=self.opt.workdir)
            pid = int(raw.strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if pid in self._by_pid:
            return
        if b"--channel" in cmdline and name.encode() in cmdline:
            raise SpawnError(
                f"{name} is already running outside this supervisor (PID {pid} from "
                f"pids/{name}.pid); stop it first"
            )

    def _kill(self, name: str, pid: int, sig: int, group: bool) -> None:
        running = self._running.get(name)
        if running is None or running.pid != pid:
            return
        try:
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _release(self, name: str) -> None:
        slot = self._slots.pop(name, None)
        if slot is None:
            return
        if slot.lock_fd is not None:
            os.close(slot.lock_fd)
        slot.released = True
        if slot.outputs:
            self._draining.append(slot)
        else:
            slot.log.close()

    # -- events from the world -------------------------------------------

    def _on_report(self, running: Running) -> None:
        report = read_report(running.report_fd)
        if report is None:
            return
        self.loop.remove_reader(running.report_fd)
        os.close(running.report_fd)
        running.report_fd = -1
        if report:
            running.exec_error = report.decode(errors="replace")
            self._log.info(running.name, running.exec_error)

    def _on_exit(self, name: str) -> None:
        running = self._running.get(name)
        if running is None:
            return
        try:
            pid, status = os.waitpid(running.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = running.pid, 0
        if pid == 0:
            return
        self.loop.remove_reader(running.pidfd)
        os.close(running.pidfd)
        if running.report_fd >= 0:  # the child is gone: its report is complete
            self._on_report(running)
        self.readiness.forget(name)
        del self._running[name]
        del self._by_pid[running.pid]
        # KillMode=mixed: whatever the main process left in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(running.pid, signal.SIGKILL)
        self._remove_credential(name)
        code = os.waitstatus_to_exitcode(status)
        slot = self._slots.get(name)
        last_lines: tuple[str, ...] = ()
        if slot is not None:
            # What it wrote just before it exited may still be in the pipe.
            for out in list(slot.outputs):
                for _ in range(DRAIN_READS):
                    if not self._on_output(slot, out):
                        break
            last_lines = tuple(line.decode("utf-8", "replace") for line in slot.log.last_lines)
            slot.log.last_lines.clear()
        event = core.Exited(
            name,
            running.pid,
            code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            reason=running.exec_error,
            last_lines=last_lines,
        )
        if slot is not None:
            slot.log.note(core.describe_exit(event.code, event.signal), self._wall())
        self._emit(event)

    def _read_output(self, slot: _Slot, out: Output) -> None:
        self._on_output(slot, out)

    def _on_output(self, slot: _Slot, out: Output) -> bool:
        """Read what is there; whether more may be (False: nothing now, or the end)."""
        if not any(o is out for o in slot.outputs):
            # Drained to its end at the exit, in the same turn of the loop that found
            # it readable: its descriptor is closed (and its number maybe reused).
            return False
        data = read_pipe(out.fd)
        if data is None:
            return False
        if data:
            out.log.write_chunk(data, self._wall())
            return True
        self.loop.remove_reader(out.fd)
        os.close(out.fd)
        out.log.flush(self._wall())
        slot.outputs.remove(out)
        if slot.released and not slot.outputs:
            slot.log.close()
            self._draining.remove(slot)
        return False

    def _on_notify(self) -> None:
        self.notify.receive(self._deliver_notification)

    def _deliver_notification(self, n: Notification) -> None:
        name = self._by_pid.get(n.pid)
        if name is None:
            # Not one of our main processes: it may not speak for them (NotifyAccess=main).
            # Said once per IGNORED_LOG_SEC at most, with a count: a bot's child that
            # floods the socket must not flood the log (1.58 M lines in 20 s were seen).
            now = self.loop.now()
            if self._ignored_said_at is None or now - self._ignored_said_at >= IGNORED_LOG_SEC:
                more = self._ignored_since
                self._log.info(
                    "notify",
                    f"ignored a message from PID {n.pid}: not a supervised process"
                    + (f" ({more} more since the last such line)" if more else ""),
                )
                self._ignored_said_at, self._ignored_since = now, 0
            else:
                self._ignored_since += 1
            return
        spec = self._running[name].spec
        if "STATUS" in n.fields:
            self._emit(core.StatusText(name, n.fields["STATUS"]))
        if n.fields.get("READY") == "1" and spec.ready == "notify":
            self._emit(core.Ready(name))
        if n.fields.get("WATCHDOG") == "1":
            self._emit(core.WatchdogPing(name))
        if n.fields.get("STOPPING") == "1":
            self._emit(core.Stopping(name))

    def own_job(self) -> str | None:
        """None: a native fleet lives in the supervisor's own cgroup and goes with it."""
        return None

    def child_pids(self) -> set[int]:
        """The processes this backend started and will reap (see runtime/reaper.py)."""
        pids = {r.pid for r in self._running.values()}
        return pids if self._preload is None else pids | self._preload.child_pids()

    def adopt(self, specs: dict[str, core.ProcessSpec], now: float) -> list[core.Event]:
        """Nothing survives a native supervisor (PR_SET_PDEATHSIG): nothing to adopt."""
        return []

    # -- queries -------------------------------------------------------------

    def note(self, name: str, kind: NoteKind, message: str) -> None:
        """The core's note, in the process's own log file too; but "started",
        which the spawn has written there already, with the command line."""
        slot = self._slots.get(name)
        if slot is not None and kind is not NoteKind.STARTED:
            slot.log.note(message, self._wall())

    @staticmethod
    def _wall() -> float:
        import time

        return time.time()

    def close(self, all_stopped: bool = False) -> None:
        """Kill whatever is left (only after a failed shutdown) and free everything.

        ``all_stopped`` (the core saw every process stop) changes nothing here: a
        process's token file goes when its exit is reaped.
        """
        for timer in (self._spawn_timer, self._memory_timer):
            if timer is not None:
                timer.cancel()
        self._to_spawn.clear()
        if self._preload is not None:
            self._preload.close()
        for r in list(self._running.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.pid, signal.SIGKILL)
            os.waitpid(r.pid, 0)
            os.close(r.pidfd)
            if r.report_fd >= 0:
                self.loop.remove_reader(r.report_fd)
                os.close(r.report_fd)
            self._remove_credential(r.name)
        self._running.clear()
        for slot in [*self._slots.values(), *self._draining]:
            for out in slot.outputs:
                self.loop.remove_reader(out.fd)
                os.close(out.fd)
            slot.log.close()
            if slot.lock_fd is not None:
                os.close(slot.lock_fd)
        self._slots.clear()
        self._draining.clear()
        self.readiness.close()
        self.loop.remove_reader(self.notify.fileno())
        self.notify.close()
        self._spawner.close()
