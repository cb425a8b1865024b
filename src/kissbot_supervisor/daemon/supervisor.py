"""The supervisor process: wires the core to a backend, the control socket and signals.

The path of one event: the backend notices something (a pidfd becomes
readable: a bot exited) and calls :meth:`Supervisor.feed` with a core event;
``feed`` queues it and hands it to :meth:`core.Core.handle`, which decides and
returns actions (a Note to log, a Spawn after the backoff, ...); ``feed``
carries them out through the backend and re-arms the one timer that wakes the
core at :meth:`core.Core.next_deadline`. Nothing here decides about restarts
or ordering.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

from .. import __version__, core
from ..config.load import Config, ConfigError, load_config
from ..config.paths import default_runtime_dir
from ..config.specs import build_policy, build_specs
from ..core.commands import Before, result, settled, wait_limit
from ..core.records import record
from ..kissbot.filecommands import FileInterfaces, bot_states, write_atomically
from ..observe.observer import Observer
from ..protocol import Request, process_entry, status_object
from ..runtime.loop import Loop, Timer
from ..runtime.selfnotify import SelfNotifier
from ..tokens.gate import TokenGate, check_token_source
from .control import ControlServer

# typing is imported for the type checker only (it costs the daemon 0.4 MiB).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..backends.native.backend import NativeBackend
    from ..backends.systemd.backend import SystemdBackend
    from ..protocol import Status, SupervisorInfo
    from .control import Reply

    Backend = NativeBackend | SystemdBackend


def release_memory() -> None:
    """Hand the heap that start-up used (config parsing, 100 forks' worth of
    environment copies) back to the system: the supervisor then idles small."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)


def raise_fd_limit() -> None:
    """Four descriptors per process (pipe, pidfd, lock, log): 300 bots pass 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class StartupError(Exception):
    """The supervisor cannot start; the message says why."""


@record
class LaunchOptions:
    workdir: Path
    config_path: str
    flags: Mapping[str, Any]
    interactive: bool = False


class Logger:
    """Supervisor log lines on stderr; journald priorities when run by systemd."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.journal = "JOURNAL_STREAM" in os.environ

    def say(self, name: str, message: str, level: int = 6) -> None:
        if self.journal:
            line = f"<{level}>{name}: {message}\n"
        else:
            line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {name}: {message}\n"
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not take supervision down with it


WARNING_KINDS = frozenset(
    {"parked", "watchdog", "start-timeout", "spawn-failed", "kill", "blocked"}
)


class Supervisor:
    def __init__(
        self,
        launch: LaunchOptions,
        cfg: Config,
        backend_kind: str = "native",
        log: Logger | None = None,
    ) -> None:
        self.launch = launch
        self.cfg = cfg
        self.log = log or Logger()
        self.loop = Loop()
        self.started_at = time.time()
        self._queue: deque[core.Event] = deque()
        self._feeding = False
        self._timer: Timer | None = None
        self._timer_at: float | None = None
        s = cfg.settings
        self.runtime_dir = Path(s.runtime_dir) if s.runtime_dir else default_runtime_dir()
        self.runtime_dir = cfg.resolve(self.runtime_dir)
        self.control_path = (
            cfg.resolve(s.control_socket) if s.control_socket else self.runtime_dir / "control.sock"
        )
        self.tokens = TokenGate(cfg, self.loop, self._on_token_change, self.log.say)
        self.backend_kind = backend_kind
        self.core = core.Core(build_specs(cfg), self._policy(cfg))
        self.backend: Backend = self._make_backend()
        self.control = ControlServer(
            self.loop, self.control_path, self.handle_request, self.log.say
        )
        self.selfnotify = SelfNotifier(self.loop)
        # Events, metrics (command, log, HTTP) and the on_failure hook.
        self.observer = Observer(
            self.loop,
            self.control,
            self.core,
            self.tokens,
            self.status,
            self.log.say,
            self.started_at,
            cfg,
        )
        self.pidfile = cfg.workdir / "pids" / "supervisor.pid"
        # KissBot's pids/supervisor.cmd and pids/supervisor.broadcast (filecommands.py).
        self.files = FileInterfaces(
            self.loop,
            cfg.workdir / "pids",
            lambda: bot_states(self.cfg.channels, self.core.procs),
            self.handle_request,
            self.log.say,
        )
        self.files.configure(cfg.settings.file_commands, cfg.settings.broadcast_relay)
        self._trim_when_settled = True  # see feed(): a trim once the start is over
        self._finished = False  # the core saw every process stop (a completed shutdown)
        self._waiters: list[_Waiter] = []

    def _policy(self, cfg: Config) -> core.Policy:
        return build_policy(cfg, backend_watchdog=self.backend_kind == "systemd")

    def _make_backend(self) -> Backend:
        cfg, s = self.cfg, self.cfg.settings
        if self.backend_kind == "systemd":
            from ..backends.systemd.backend import SystemdBackend
            from ..backends.systemd.units import options_from_config

            return SystemdBackend(
                self.loop,
                lambda cred: options_from_config(
                    self.cfg,
                    self.core.policy,
                    self.backend.version,  # type: ignore[union-attr]
                    cred,
                ),
                cfg.workdir / "pids",
                cfg.resolve(s.hub_socket),
                self.runtime_dir,
                self.feed,
                self.log.say,
                self.tokens.secret_for,
            )
        # Each backend is imported only when chosen: neither is resident in the other's daemon.
        from ..backends.native.backend import NativeBackend, NativeOptions

        return NativeBackend(
            self.loop,
            NativeOptions(
                workdir=cfg.workdir,
                runtime_dir=self.runtime_dir,
                logs_dir=cfg.resolve(s.logs_dir),
                log_max_bytes=s.logs_max_bytes,
                log_backups=s.logs_backups,
                hub_socket=cfg.resolve(s.hub_socket),
            ),
            self.feed,
            self.log.say,
            self.tokens.secret_for,
        )

    # -- the event path ------------------------------------------------------

    def feed(self, event: core.Event) -> None:
        """Hand an event to the core and carry out its actions (re-entrant safe)."""
        self._queue.append(event)
        if self._feeding:
            return
        self._feeding = True
        try:
            while self._queue:
                actions = self.core.handle(self._queue.popleft(), self.loop.now())
                for action in actions:
                    self._carry_out(action)
        finally:
            self._feeding = False
        self._arm_timer()
        self._check_waiters()
        self.selfnotify.status(self.summary())
        if self._trim_when_settled and self._settled():
            # Once, after a start or reload: the burst of starting a fleet (under
            # systemd, hundreds of D-Bus signals parsed into objects) grew the heap
            # after the trim at start-up; hand it back now that it is over.
            self._trim_when_settled = False
            release_memory()

    def _settled(self) -> bool:
        """No process on its way up: every one is running, stopped, parked or waiting."""
        return not any(
            p.phase is core.Phase.STARTING or p.spawning for p in self.core.procs.values()
        )

    def _carry_out(self, action: core.Action) -> None:
        match action:
            case core.Note(name, kind, message):
                self.log.say(name, message, 4 if kind in WARNING_KINDS else 6)
                if kind not in ("started",):
                    self.backend.note(name, message)
                self.observer.on_note(name, kind, message)
            case core.Finished():
                self._finished = True
                self.loop.stop()
            case _:
                self.backend.execute(action)

    def _arm_timer(self) -> None:
        when = self.core.next_deadline()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = None if when is None else self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = None
        self.feed(core.Tick())

    def _on_token_change(self) -> None:
        gates = [core.Gate(name, *self.tokens.gate(name)) for name in self.core.names()]
        self.feed(core.Gates(tuple(gates)))

    # -- life cycle ------------------------------------------------------------

    def run(self) -> int:
        import signal

        self.loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        self.loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        self._write_pidfile()
        raise_fd_limit()
        self.log.say(
            "supervisor",
            f"kissbot-supervisor {__version__} ({self.backend.name} backend) "
            f"in {self.cfg.workdir}: "
            f"{len(self.cfg.channels)} channels, "
            f"hub {'on' if self.cfg.settings.hub_enabled else 'off'}"
            f", control socket {self.control_path}",
        )
        # One batch, so nothing starts before every adoption and token gate is known.
        specs = {spec.name: spec for spec in build_specs(self.cfg)}
        adopted = self.backend.adopt(specs, self.loop.now())
        gates = [core.Gate(name, *self.tokens.gate(name)) for name in self.core.names()]
        self.feed(core.Batch((*adopted, core.Gates(tuple(gates)))))
        self.files.start()  # a command file left waiting sees the adopted fleet
        self.selfnotify.ready(self.summary())
        release_memory()
        try:
            self.loop.run()
        finally:
            self.close()
        return 0

    def _on_stop_signal(self) -> None:
        if self.core.shutting_down:
            # A second signal: the operator does not want to wait for the stop timeouts.
            self.log.say("supervisor", "second stop signal: killing every process now", 4)
            self.loop.stop()
            return
        self.selfnotify.stopping()
        self.feed(core.Shutdown())

    def _on_reload_signal(self) -> None:
        self.reload()

    def close(self) -> None:
        self.observer.close()
        self.files.close()
        self.control.close()
        self.backend.close(all_stopped=self._finished)
        self.tokens.close()
        self.selfnotify.close()
        self.loop.close()
        try:
            if self.pidfile.read_text().strip() == str(os.getpid()):
                self.pidfile.unlink()
        except OSError:
            pass
        self.log.say("supervisor", "stopped")

    def _write_pidfile(self) -> None:
        try:
            self.pidfile.parent.mkdir(parents=True, exist_ok=True)
            # At once and 0644 (not 0600 under UMask=0077): scripts `kill -HUP $(cat ...)`.
            write_atomically(self.pidfile, f"{os.getpid()}\n")
        except OSError as e:
            self.log.say("supervisor", f"cannot write {self.pidfile}: {e.strerror}", 4)

    # -- reload ------------------------------------------------------------------

    def reload(self) -> dict[str, Any]:
        """Re-read the config; on any error keep the running fleet exactly as it is."""
        try:
            cfg = load_config(
                self.launch.workdir,
                self.launch.config_path,
                self.launch.flags,
                interactive=self.launch.interactive,
                isolate=True,
            )
            specs = build_specs(cfg)
            policy = self._policy(cfg)
            self.tokens.check_config(cfg)
        except ConfigError as e:
            self.log.say("supervisor", f"reload refused, nothing changed: {e}", 3)
            return {"ok": False, "error": f"reload refused, nothing changed: {e}"}
        old = {n: self.core.procs[n].spec for n in self.core.names()}
        new = {s.name: s for s in specs}
        changes = {
            "added": [n for n in new if n not in old],
            "removed": [n for n in old if n not in new],
            "changed": [n for n in new if n in old and old[n] != new[n]],
        }
        self.cfg = cfg
        self.tokens.update_config(cfg)
        self.files.configure(cfg.settings.file_commands, cfg.settings.broadcast_relay)
        self.observer.configure(cfg)
        self.log.say(
            "supervisor",
            "reloaded: " + "; ".join(f"{k} {', '.join(v) or 'none'}" for k, v in changes.items()),
        )
        gates = tuple(core.Gate(spec.name, *self.tokens.gate(spec.name)) for spec in specs)
        self._trim_when_settled = True
        self.feed(core.Reload(specs, policy, gates))
        release_memory()
        return {"ok": True, "changes": changes}

    # -- status and control --------------------------------------------------

    def summary(self) -> str:
        bots = [p for n, p in self.core.procs.items() if n != core.HUB]
        running = sum(p.phase is core.Phase.RUNNING for p in bots)
        text = f"{running}/{len(bots)} bots running"
        hub = self.core.procs.get(core.HUB)
        if hub is not None:
            text += ", hub ready" if hub.phase is core.Phase.RUNNING else f", hub {hub.phase}"
        if self.core.shutting_down:
            text = "stopping: " + text
        return text

    def status(self) -> Status:
        from ..runtime.procinfo import rss_bytes

        entries = []
        for st in self.core.status(self.loop.now()):
            entry = process_entry(
                st.name,
                state=str(st.state),
                want=st.want,
                pid=st.pid,
                uptime_s=st.uptime_s,
                restarts=st.restarts,
                rss_bytes=rss_bytes(st.pid),
                last_exit=st.last_exit,
                token_state=st.token_state,
                reason=st.reason,
                status_text=st.status_text,
            )
            if st.name == core.HUB:
                entry["socket"] = str(self.cfg.settings.hub_socket)
            entries.append(entry)
        supervisor: SupervisorInfo = {
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "version": __version__,
            "config": str(self.cfg.config_file),
            "workdir": str(self.cfg.workdir),
            "control_socket": str(self.control_path),
            "logs_dir": str(self.cfg.resolve(self.cfg.settings.logs_dir)),
            "rss_bytes": rss_bytes(os.getpid()),
            "summary": self.summary(),
        }
        return status_object(self.backend.name, supervisor, entries)

    def handle_request(self, request: Request, reply: Reply) -> None:
        if request.cmd == "status":
            reply({"ok": True, "status": self.status()})
            return
        if request.cmd == "metrics":
            reply({"ok": True, "metrics": self.observer.metrics_text()})
            return
        if request.cmd == "reload":
            reply(self.reload())
            return
        names = self._resolve(request.names)
        if isinstance(names, str):
            reply({"ok": False, "error": names})
            return
        before = {n: Before(self.core.procs[n].phase, self.core.procs[n].pid) for n in names}
        event: core.Event
        if request.cmd == "start":
            event = core.Start(tuple(names))
        elif request.cmd == "stop":
            event = core.Stop(tuple(names))
        else:
            event = core.Restart(tuple(names))
        limit = max(wait_limit(request.cmd, self.core.procs[n], self.core.policy) for n in names)
        waiter = _Waiter(request.cmd, before, reply)
        waiter.timer = self.loop.call_later(limit, lambda: self._answer(waiter))
        self._waiters.append(waiter)
        self.feed(event)

    def _check_waiters(self) -> None:
        for w in list(self._waiters):
            if all(settled(w.cmd, self.core.procs.get(n), b) for n, b in w.before.items()):
                self._answer(w)

    def _answer(self, w: _Waiter) -> None:
        if w not in self._waiters:
            return
        self._waiters.remove(w)
        if w.timer is not None:
            w.timer.cancel()
        results = [result(w.cmd, n, self.core.procs.get(n), b) for n, b in w.before.items()]
        w.reply({"ok": True, "results": results})

    def _resolve(self, names: tuple[str, ...]) -> list[str] | str:
        known = self.core.names()
        out: list[str] = []
        for name in names:
            if name == "all":
                out.extend(n for n in known if n not in out)
            elif name in self.core.procs and not self.core.procs[name].removed:
                if name not in out:
                    out.append(name)
            else:
                listed = ", ".join(known) or "none"
                return f"unknown process {name!r} (known: {listed}, or all)"
        return out


@record(frozen=False)
class _Waiter:
    cmd: str
    before: dict[str, Before]
    reply: Reply
    timer: Timer | None = None


def _load(launch: LaunchOptions) -> tuple[Config, tuple[core.ProcessSpec, ...]]:
    try:
        cfg = load_config(
            launch.workdir,
            launch.config_path,
            launch.flags,
            interactive=launch.interactive,
            isolate=True,
        )
        specs = build_specs(cfg)
        check_token_source(cfg)
    except ConfigError as e:
        raise StartupError(str(e)) from None
    return cfg, specs


def check_config(launch: LaunchOptions) -> str:
    """``--check-config``: what would run, or StartupError."""
    cfg, specs = _load(launch)
    lines = [f"{cfg.config_file}: OK, {len(cfg.channels)} channels"]
    lines += [f"  {spec.name}: {' '.join(spec.argv)}" for spec in specs]
    return "\n".join(lines)


def choose_backend(wanted: str, say: Callable[[str, str], None]) -> str:
    """``auto``: systemd when PID 1 is systemd and its bus is there, else native."""
    if wanted == "native":
        return "native"
    from ..backends.systemd.backend import systemd_available

    why_not = systemd_available()
    if why_not is None:
        return "systemd"
    if wanted == "systemd":
        raise StartupError(f"supervisor.backend is systemd, but {why_not}; use --backend native")
    say("supervisor", f"using the native backend: {why_not}")
    return "native"


def export_static_units(launch: LaunchOptions, directory: Path) -> list[Path]:
    """``kissbot-supervisor export-units DIR``: static unit files for this config."""
    import subprocess

    from ..backends.systemd.export import export_units
    from ..backends.systemd.messages import parse_version_text
    from ..backends.systemd.units import UnitError, options_from_config

    cfg, specs = _load(launch)
    try:  # the version decides RestartSteps & co.; 252 (Debian 12) when unknown
        out = subprocess.run(
            ["systemctl", "--version"], capture_output=True, text=True, check=False, timeout=10
        ).stdout.split()
        version = parse_version_text(out[1]) if len(out) > 1 else 252
    except (OSError, ValueError, subprocess.SubprocessError):
        version = 252
    opts = options_from_config(cfg, build_policy(cfg), version)
    try:
        files = export_units(specs, opts)
    except UnitError as e:
        raise StartupError(str(e)) from None
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files:
        path = directory / name
        path.write_text(content)
        written.append(path)
    return written


def make_supervisor(launch: LaunchOptions) -> Supervisor:
    cfg, _specs = _load(launch)
    log = Logger()
    kind = choose_backend(cfg.settings.backend, log.say)
    try:
        return Supervisor(launch, cfg, kind, log)
    except Exception as e:
        from ..backends.systemd.bus import BusError

        if kind == "systemd" and cfg.settings.backend == "auto" and isinstance(e, BusError):
            log.say("supervisor", f"using the native backend: {e}")
            return Supervisor(launch, cfg, "native", log)
        if isinstance(e, BusError):
            raise StartupError(str(e)) from None
        raise
