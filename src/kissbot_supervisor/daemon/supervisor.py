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

import os
import time
from collections import deque
from pathlib import Path

from .. import __version__, core
from ..config.load import Config, ConfigError
from ..config.paths import default_runtime_dir, instance_runtime_dir
from ..config.settings import Settings
from ..config.specs import build_policy, build_specs
from ..kissbot.filecommands import FileInterfaces, bot_states
from ..kissbot.names import KISSBOT_DIRS
from ..kissbot.systemlog import SystemLogWatcher
from ..observe.observer import Observer
from ..protocol import ALARMS
from ..runtime.fs import base_of, ensure_private_dir, make_dirs, read_regular, write_atomically
from ..runtime.instance import claim_runtime_dir
from ..runtime.log import Log
from ..runtime.loop import Loop, Timer
from ..runtime.reaper import Reaper
from ..runtime.resources import (
    descriptor_shortfall,
    given_fd_limit,
    protect_from_oom,
    raise_fd_limit,
    release_memory,
)
from ..runtime.selfnotify import SelfNotifier
from ..tokens.gate import TokenGate
from .control import Access, ControlServer
from .history import History
from .launch import LaunchOptions, StartupError, read_config
from .requests import Requests
from .status import build_status, summary

# typing is imported for the type checker only (it costs the daemon 0.4 MiB).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..backends.native.backend import NativeBackend
    from ..backends.native.logfiles import LogFile
    from ..backends.systemd.backend import SystemdBackend
    from ..status import Status

    Backend = NativeBackend | SystemdBackend


# The supervisor's own log file in the processes' logs directory (native backend).
SUPERVISOR_LOG = "kissbot-supervisor.log"
# The jobs of the supervisor's own unit that bring it back at once (see _on_stop_signal).
# SIGHUPs closer together than this are merged into one reload.
RELOAD_GAP_SEC = 1.0

RESTART_JOBS = frozenset({"restart", "try-restart", "reload-or-restart", "reload-or-try-restart"})


def bots_owner(s: Settings) -> tuple[int, int] | None:
    """The (UID, GID) the systemd units run as (``systemd.user``, ``systemd.group``),
    or None when they run as the supervisor's user; StartupError when unknown."""
    if s.systemd_user is None:
        return None
    import grp
    import pwd

    def missing(key: str, what: str, name: str) -> StartupError:
        return StartupError(
            f"supervisor.{key}: there is no {what} {name!r} on this machine; create the "
            "bots' user and group first (the Debian package's sysusers.d file does)"
        )

    name = s.systemd_user
    try:
        user = None if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise missing("systemd.user", "user", name) from None
    uid, gid = (user.pw_uid, user.pw_gid) if user else (int(name), int(name))
    if s.systemd_group is not None:
        group = s.systemd_group
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise missing("systemd.group", "group", group) from None
    return uid, gid


def liveness_files(specs: tuple[core.ProcessSpec, ...]) -> dict[str, str]:
    """Process name -> the file whose writes are its signs of life (bot.liveness)."""
    return {s.name: s.liveness_file for s in specs if s.liveness_file}


class Supervisor:
    def __init__(
        self,
        launch: LaunchOptions,
        cfg: Config,
        backend_kind: str = "native",
        log: Log | None = None,
    ) -> None:
        self.launch = launch
        self.cfg = cfg
        self.log = log or Log()
        self.loop = Loop()
        self.loop.on_late = self._on_late
        self.loop.on_error = self._on_internal_error
        self.started_at = time.time()
        self._queue: deque[core.Event] = deque()
        self._hups = 0  # SIGHUPs since the last reload they asked for
        self._reload_timer: Timer | None = None
        self._last_hup_reload = -RELOAD_GAP_SEC
        self._feeding = False
        self._timer: Timer | None = None
        self._timer_at: float | None = None
        s = cfg.settings
        if s.runtime_dir:
            self.runtime_dir = cfg.resolve(Path(s.runtime_dir))
        else:  # the workdir's own, inside the shared one (config/paths.py)
            shared = default_runtime_dir()
            self.runtime_dir = instance_runtime_dir(cfg.workdir)
            if self.runtime_dir != shared:
                # The shared one too: whoever owns it could swap ours inside it.
                ensure_private_dir(shared)
        ensure_private_dir(self.runtime_dir)  # ours alone, or no start (runtime/fs.py)
        # And ours only while we run: never a second supervisor's (runtime/instance.py).
        # The descriptor stays open for the process's life; the kernel frees the lock.
        self._instance_lock = claim_runtime_dir(self.runtime_dir, cfg.workdir)
        self.control_path = (
            cfg.resolve(s.control_socket) if s.control_socket else self.runtime_dir / "control.sock"
        )
        self.tokens = TokenGate(cfg, self.loop, self._on_token_change, self.log)
        self.backend_kind = backend_kind
        # The bots' user and group when they are not ours: the owner of the directories
        # KissBot needs, and refused on the control socket.
        self.bots_owner = bots_owner(s) if backend_kind == "systemd" else None
        for name in KISSBOT_DIRS:
            # Made for the bots if missing (an existing one, or a symlink, is left as it
            # is); one that cannot be made is said, and what needs it says so in turn.
            try:
                make_dirs(cfg.workdir / name, cfg.workdir, symlink_ok=True, owner=self.bots_owner)
            except OSError as e:
                self.log.warning(
                    "supervisor", f"cannot make {cfg.workdir / name}/: {e.strerror or e}"
                )
        specs = build_specs(cfg)
        self._given_nofile = given_fd_limit()  # for the children, before it is raised
        if backend_kind == "native":
            # Refused whole, with the way out, rather than a fleet that dies of
            # EMFILE halfway through its start.
            shortfall = descriptor_shortfall(len(specs))
            if shortfall is not None:
                raise StartupError(shortfall)
        self.core = core.Core(specs, self._policy(cfg))
        self.history = History(self.started_at)  # since when, and the last exits
        self.backend: Backend = self._make_backend()
        self._log_file = self._keep_own_log() if backend_kind == "native" else None
        # bot.liveness: system-log. Not the backend's: the supervisor watches the files
        # and the core kills, the same under systemd (which has no WatchdogSec for it).
        self.system_logs = SystemLogWatcher(self.loop, cfg.workdir, self._on_written, self.log)
        self.system_logs.configure(liveness_files(specs))
        self.requests = Requests(
            self.loop,
            self.core,
            self.feed,
            self.status,
            self._metrics,  # the observer comes later: it needs the control socket
            self.reload,
        )
        self.control = ControlServer(
            self.loop,
            self.control_path,
            self.requests.handle,
            self.log,
            Access(s.control_group, *(self.bots_owner or (None, None))),
        )
        self.selfnotify = SelfNotifier(self.loop)
        # Events, metrics (command, log, HTTP) and the on_failure hook.
        self.observer = Observer(
            self.loop,
            self.control,
            self.core,
            self.tokens,
            self.status,
            self.log,
            self.started_at,
            cfg,
        )
        self.pidfile = cfg.workdir / "pids" / "supervisor.pid"
        # KissBot's pids/supervisor.cmd and pids/supervisor.broadcast (filecommands.py).
        self.files = FileInterfaces(
            self.loop,
            cfg.workdir / "pids",
            lambda: bot_states(self.cfg.channels, self.core.procs),
            self.requests.handle,
            self.log,
        )
        self.files.configure(cfg.settings.file_commands, cfg.settings.broadcast_relay)
        # Orphans among the fleet's processes are handed to us and ended (runtime/reaper.py).
        self.helpers: set[int] = set()  # children started outside the daemon (the prompt)
        # Whether our prompt child still runs (cli/supervisor.py sets it when there is
        # one; asking reaps a prompt that has ended). While it runs, a SIGINT is the
        # operator's Ctrl-C meant for it: the terminal sends it to its whole foreground
        # process group, this process included, and it must end the prompt's command or
        # clear its line, not stop the fleet. quit, SIGTERM and a SIGINT without a
        # prompt do.
        self.prompt_alive: Callable[[], bool] = lambda: False
        self.reaper = Reaper(self.loop, self.log, self._started_children)
        self._trim_when_settled = True  # see feed(): a trim once the start is over
        self._finished = False  # the core saw every process stop (a completed shutdown)

    def _keep_own_log(self) -> LogFile:
        """Our own log, also in a file next to the processes' logs (native backend: a
        background run's stderr goes nowhere; under systemd journald keeps it), rotated
        as they are. Its name cannot be a channel's: a login has no '-'."""
        from ..backends.native.logfiles import LogFile

        s = self.cfg.settings
        logs_dir = self.cfg.resolve(s.logs_dir)
        file = LogFile(
            logs_dir / SUPERVISOR_LOG,
            s.logs_max_bytes,
            s.logs_backups,
            lambda message: self.log.warning("supervisor", message),
            base=base_of(logs_dir, self.cfg.workdir),
        )
        self.log.add_sink(lambda line: file.write_chunk(line.encode() + b"\n", time.time()))
        return file

    def _policy(self, cfg: Config) -> core.Policy:
        return build_policy(cfg, backend_watchdog=self.backend_kind == "systemd")

    def _make_backend(self) -> Backend:
        cfg, s = self.cfg, self.cfg.settings
        if self.backend_kind == "systemd":
            from ..backends.systemd.backend import SystemdBackend
            from ..backends.systemd.units import options_from_config

            if s.bot_preload:
                self.log.warning(
                    "supervisor",
                    "bot.preload is set but applies to the native backend only: under "
                    "systemd each bot is a unit that systemd itself starts (docs/design.md, "
                    '"Preload"); bots start as ever',
                )

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
                self.log,
                self.tokens.credential_for,
                cfg.resolve(s.db),
            )
        # Each backend is imported only when chosen: neither is resident in the other's daemon.
        from ..backends.native.backend import NativeBackend, NativeOptions

        native = NativeBackend(
            self.loop,
            NativeOptions(
                workdir=cfg.workdir,
                runtime_dir=self.runtime_dir,
                logs_dir=cfg.resolve(s.logs_dir),
                log_max_bytes=s.logs_max_bytes,
                log_backups=s.logs_backups,
                hub_socket=cfg.resolve(s.hub_socket),
                child_nofile=self._given_nofile,
                hub_db=cfg.resolve(s.db),
                preload_modules=s.bot_preload_modules if s.bot_preload else None,
                memory_merge=s.bot_memory_merge,
            ),
            self.feed,
            self.log,
            self.tokens.credential_for,
        )
        native.other_children = self._other_children
        return native

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
        self.history.refresh(self.core, time.time())
        self._arm_timer()
        self.requests.check_waiters()
        self.selfnotify.status(summary(self.core))
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
                (self.log.warning if kind in ALARMS else self.log.info)(name, message)
                self.backend.note(name, kind, message)
                self.observer.on_note(name, kind, message)
                self.history.on_note(self.core, name, kind, time.time())
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

    def _on_internal_error(self, e: Exception) -> None:
        import traceback

        where = "".join(traceback.format_exception(e)).rstrip().replace("\n", " | ")
        self.log.error(
            "supervisor",
            f"internal error, carrying on (please report it): {where}",
        )

    def _on_late(self, seconds: float) -> None:
        # The loop was not running when it should have been (SIGSTOP, swap, a long
        # burst of work). Said to the core before any deadline is acted upon, so
        # that the bots are not blamed for the supervisor's own absence.
        self.feed(core.Stalled(seconds))

    def _on_written(self, name: str) -> None:
        if name in self.core.procs:
            self.feed(core.WatchdogPing(name))

    def _on_token_change(self) -> None:
        gates = [core.Gate(name, *self.tokens.gate(name)) for name in self.core.names()]
        self.feed(core.Gates(tuple(gates)))

    # -- life cycle ------------------------------------------------------------

    def run(self) -> int:
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            # What the loop puts back when it closes: once the shutdown is done, a
            # late signal (an impatient caller) must not turn the clean exit into a kill.
            signal.signal(sig, signal.SIG_IGN)
        self.loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        self.loop.add_signal_handler(signal.SIGINT, self._on_interrupt)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        self.reaper.start()
        self._write_pidfile()
        raise_fd_limit()
        oom_note = protect_from_oom()
        self.log.info(
            "supervisor",
            f"kissbot-supervisor {__version__} ({self.backend.name} backend) "
            f"in {self.cfg.workdir}: "
            f"{len(self.cfg.channels)} channels, "
            f"hub {'on' if self.cfg.settings.hub_enabled else 'off'}"
            f", control socket {self.control_path}"
            + (f", settings from {self.cfg.settings_file}" if self.cfg.settings_file else ""),
        )
        for note in self.cfg.notes:
            self.log.warning("supervisor", note)
        if oom_note is not None:
            self.log.info("supervisor", oom_note)
        # One batch, so nothing starts before every adoption and token gate is known.
        specs = {spec.name: spec for spec in build_specs(self.cfg)}
        adopted = self.backend.adopt(specs, self.loop.now())
        gates = [core.Gate(name, *self.tokens.gate(name)) for name in self.core.names()]
        self.feed(core.Batch((*adopted, core.Gates(tuple(gates)))))
        self.files.start()  # a command file left waiting sees the adopted fleet
        self.selfnotify.ready(summary(self.core))
        release_memory()
        try:
            self.loop.run()
        finally:
            self.close()
        return 0

    def _on_interrupt(self) -> None:
        if not self.prompt_alive():
            self._on_stop_signal()

    def _on_stop_signal(self) -> None:
        if self.core.shutting_down:
            # A second signal: the operator does not want to wait for the stop timeouts.
            self.log.warning("supervisor", "second stop signal: killing every process now")
            self.loop.stop()
            return
        self.selfnotify.stopping()
        if self.backend.own_job() in RESTART_JOBS:
            # systemctl restart, or a package upgrade: a supervisor comes back at once
            # and adopts the fleet, which keeps running meanwhile (its units are not in
            # our cgroup). Only a stop stops it.
            self.log.info(
                "supervisor",
                "restarting (a restart job of this unit): the hub and the bots keep running, "
                "for the next supervisor to adopt",
            )
            self.loop.stop()
            return
        self.feed(core.Shutdown())

    def _on_reload_signal(self) -> None:
        # A reload re-reads the whole config (a child process parses the YAML):
        # SIGHUPs that come faster than RELOAD_GAP_SEC apart are one reload, run
        # when the gap is over, so that a storm of them cannot starve the loop.
        self._hups += 1
        if self._reload_timer is None:
            when = max(self.loop.now(), self._last_hup_reload + RELOAD_GAP_SEC)
            self._reload_timer = self.loop.call_at(when, self._reload_on_signal)

    def _reload_on_signal(self) -> None:
        self._reload_timer = None
        merged, self._hups = self._hups, 0
        if self.core.shutting_down:
            return
        if merged > 1:
            self.log.info("supervisor", f"one reload for {merged} SIGHUPs")
        self.reload()
        self._last_hup_reload = self.loop.now()

    def _started_children(self) -> set[int]:
        # Asked at every SIGCHLD (the reaper's sweep): a prompt that has ended (its
        # terminal closed) is reaped then, not left a zombie for the daemon's life.
        self.prompt_alive()
        return self.backend.child_pids() | self._other_children()

    def _other_children(self) -> set[int]:
        """The supervisor's children that are not the fleet's: hook runs, a token
        worker, the prompt (a PID the fork server names must be none of these)."""
        return self.observer.child_pids() | self.tokens.child_pids() | self.helpers

    def close(self) -> None:
        self.observer.close()
        self.files.close()
        self.system_logs.close()
        self.control.close()
        self.backend.close(all_stopped=self._finished)
        self.reaper.sweep()  # the last orphans: once we are gone, they would be PID 1's
        self.tokens.close()
        self.selfnotify.close()
        self.loop.close()
        try:
            if (
                read_regular(self.pidfile, 64, base=self.cfg.workdir).strip()
                == str(os.getpid()).encode()
            ):
                self.pidfile.unlink()
        except OSError:
            pass
        self.log.info("supervisor", "stopped")
        if self._log_file is not None:
            self._log_file.close()

    def _write_pidfile(self) -> None:
        try:
            make_dirs(self.pidfile.parent, self.cfg.workdir)
            # At once and 0644 (not 0600 under UMask=0077): scripts `kill -HUP $(cat ...)`.
            write_atomically(self.pidfile, f"{os.getpid()}\n", base=self.cfg.workdir)
        except OSError as e:
            self.log.warning("supervisor", f"cannot write {self.pidfile}: {e.strerror}")

    # -- status ----------------------------------------------------------------

    def _metrics(self) -> str:
        return self.observer.metrics_text()

    def status(self) -> Status:
        now = self.loop.now()
        return build_status(
            self.core,
            self.cfg,
            self.backend.name,
            self.control_path,
            self.started_at,
            now,
            self.history,
        )

    # -- reload ------------------------------------------------------------------

    def reload(self) -> dict[str, Any]:
        """Re-read the config; on any error keep the running fleet exactly as it is."""
        try:
            cfg = read_config(self.launch)
            specs = build_specs(cfg)
            policy = self._policy(cfg)
            self.tokens.check_config(cfg)
            if self.backend.name == "native":
                shortfall = descriptor_shortfall(len(specs))
                if shortfall is not None:
                    raise ConfigError(str(cfg.config_path), "twitch.channels", shortfall)
        except ConfigError as e:
            self.log.error("supervisor", f"reload refused, nothing changed: {e}")
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
        self.log.info(
            "supervisor",
            "reloaded: " + "; ".join(f"{k} {', '.join(v) or 'none'}" for k, v in changes.items()),
        )
        for note in cfg.notes:
            self.log.warning("supervisor", note)
        gates = tuple(core.Gate(spec.name, *self.tokens.gate(spec.name)) for spec in specs)
        self._trim_when_settled = True
        self.feed(core.Reload(specs, policy, gates))
        self.system_logs.configure(liveness_files(specs))  # after: a ping names a known bot
        release_memory()
        return {"ok": True, "changes": changes}

    # -- status and control --------------------------------------------------
