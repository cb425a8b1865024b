"""The systemd backend: the core's actions as transient units, unit changes as core events.

``Spawn`` becomes ``StartTransientUnit`` (or ``RestartUnit`` for a unit
waiting in ``auto-restart``, ``StartUnit`` for a stopped unit still loaded),
``Kill`` SIGTERM becomes ``StopUnit`` and SIGKILL ``KillUnit``, ``Hold``
cancels systemd's own pending restart. Unit state comes from
``PropertiesChanged`` signals after ``Subscribe`` (no polling): a new
``MainPID`` is a ``Spawned``, a main PID gone is an ``Exited`` with
``ExecMainCode``/``ExecMainStatus`` and systemd's ``Result`` as the reason,
``ActiveState=active`` of a ``Type=notify`` unit is ``Ready``. Like the native
backend, it decides nothing.

Why one module of 600 lines: adoption, starts, stops and the unit signals
change the same per-unit tracks; the pure parts (unit properties, D-Bus
messages) and the connection are in ``units``, ``messages`` and ``bus``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
from collections.abc import Callable, Collection
from pathlib import Path

from jeepney import Message

from ... import core
from ...core.records import record, replace
from ...kissbot.names import name_of_unit, unit_of
from ...kissbot.readiness import ReadinessWatcher, remove_stale_flags
from ...runtime.fs import make_dirs
from ...runtime.loop import Loop
from ...tokens.states import CredentialPending
from .bus import BusConnection, BusError
from .exitcodes import setup_failure
from .lastwords import LastWords
from .leftovers import own_job_type
from .messages import (
    ERROR_UNIT_EXISTS,
    SERVICE_INTERFACE,
    UNIT_INTERFACE,
    SystemdError,
    add_match,
    check_reply,
    get_all_properties,
    kill_unit,
    list_units_by_patterns,
    manager_version,
    match_properties_changed,
    parse_get_all,
    parse_list_units,
    parse_properties_changed,
    parse_version,
    reset_failed_unit,
    restart_unit,
    start_transient_unit,
    start_unit,
    stop_unit,
    subscribe,
    unit_name_of_path,
)
from .units import (
    Property,
    UnitOptions,
    slice_properties,
    transient_properties,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ...protocol import NoteKind
    from ...runtime.log import Log

SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3
# Results that explain an exit beyond its status.
TELLING_RESULTS = {
    "watchdog": "watchdog timeout",
    "timeout": "timed out",
    "oom-kill": "killed by the OOM killer",
    "start-limit-hit": "start limit hit",
    "core-dump": "dumped core",
}
# What the backend reads from a unit's PropertiesChanged. systemd sends these with
# their values; only the exec command lists (Service) and Conditions/Asserts (Unit)
# come as invalidated, on every signal, and those are not ours to fetch.
WANTED = {
    UNIT_INTERFACE: ("ActiveState", "SubState", "Job"),
    SERVICE_INTERFACE: ("MainPID", "ExecMainCode", "ExecMainStatus", "Result"),
}
# Error replies that only say the unit is already gone: nothing left to stop or reset.
GONE_ERRORS = (
    "org.freedesktop.systemd1.NoSuchUnit",
    "org.freedesktop.systemd1.UnitNotLoaded",
    "org.freedesktop.DBus.Error.UnknownObject",
    "org.freedesktop.DBus.Error.UnknownMethod",
)
# How long the exit waits for calls still queued or unanswered (see close()).
DRAIN_SEC = 5.0
# What the backend keeps of each unit across a supervisor restart (see UnitMemory).
MEMORY_FILE = "units.json"


def system_bus_address() -> str:
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS


def systemd_available() -> str | None:
    """None when PID 1 is systemd and its bus answers, else why not."""
    if not os.path.isdir("/run/systemd/system"):
        return "PID 1 is not systemd (/run/systemd/system is missing)"
    address = system_bus_address()
    path = address.removeprefix("unix:path=").split(",")[0]
    if address.startswith("unix:path=") and not os.path.exists(path):
        return f"the system bus socket {path} does not exist"
    return None


@record(frozen=False)
class Track:
    """What we know of one unit."""

    name: str
    unit: str
    spec: core.ProcessSpec
    pid: int | None = None
    active: str = ""
    sub: str = ""
    ready_sent: bool = False
    starting: bool = False  # a start job is under way
    job: str | None = None  # the path of the unit's job in progress, whoever asked
    stopping: bool = False  # the supervisor stopped or killed it: its exit is no failure
    credential: Path | None = None  # the token file of its start under way, if any


def fingerprint(props: list[Property]) -> int:
    """A digest of a unit's properties, to tell whether a loaded unit has the ones we want.

    crc32, not hashlib: that loads OpenSSL into the daemon for nothing secret. The
    repr of the a(sv) list is stable: str, int, bool, bytes, lists and tuples only.
    """
    import zlib

    return zlib.crc32(repr(props).encode())


ENTRY_KEYS = ("restarts", "created")  # what a units.json entry may hold


class UnitMemory:
    """What the supervisor must know of its units after a kill -9: ``RUNTIME_DIR/units.json``.

    Per process: ``restarts``, the core's count when it last started the unit
    (its own restarts: ``RestartUnit``, ``StartUnit``, ``StartTransientUnit``
    after its backoff, which systemd's ``NRestarts`` does not count: that counts
    only systemd's automatic restarts, and a start that is not one sets it back
    to 0); and ``created``, the :func:`fingerprint` of the properties the loaded
    unit was created with (a stopped hub stays loaded, see ``_transient_started``).
    An adoption gives back ``restarts + NRestarts``: the supervisor's count, plus
    what systemd restarted by itself since.

    A file, not a unit property: a transient unit's properties are fixed once it
    is loaded, except a few resource settings. The runtime directory survives a
    kill -9 but not a reboot, like the units themselves. The file is written only
    when a value changes (a restart, a new unit), atomically, once per turn of the
    loop however many changed (a fleet's start is one write): no wake-ups. A
    native supervisor needs none of it: its processes die with it
    (PR_SET_PDEATHSIG), and a new one starts every count from 0.
    """

    def __init__(self, loop: Loop, path: Path, log: Log) -> None:
        self.loop = loop
        self.path = path
        self._log = log
        self._data: dict[str, dict[str, int]] = {}
        self._dirty = False
        try:
            loaded = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.info("supervisor", f"{path}: cannot read it ({e}); restart counts start from 0")
            return
        if isinstance(loaded, dict):
            for name, entry in loaded.items():
                if isinstance(entry, dict):
                    self._data[str(name)] = {
                        k: v for k, v in entry.items() if isinstance(v, int) and k in ENTRY_KEYS
                    }

    def keep_only(self, names: Collection[str]) -> None:
        """Forget the processes the config no longer has."""
        for name in [n for n in self._data if n not in names]:
            self.forget(name)

    def get(self, name: str, key: str) -> int | None:
        return self._data.get(name, {}).get(key)

    def set(self, name: str, **values: int) -> None:
        entry = self._data.setdefault(name, {})
        if all(entry.get(k) == v for k, v in values.items()):
            return
        entry.update(values)
        self._changed()

    def forget(self, name: str) -> None:
        if self._data.pop(name, None) is not None:
            self._changed()

    def _changed(self) -> None:
        if not self._dirty:
            self._dirty = True
            self.loop.call_later(0.0, self.flush)

    def flush(self) -> None:
        """Write the file now, if anything changed since it was last written."""
        from ...runtime.fs import write_atomically

        if not self._dirty:
            return
        self._dirty = False
        try:
            write_atomically(self.path, json.dumps(self._data, sort_keys=True), 0o600)
        except OSError as e:
            self._log.info(
                "supervisor",
                f"{self.path}: cannot write it ({e}); an adoption after a "
                "crash would read older restart counts",
            )


class SystemdBackend:
    name = "systemd"

    def __init__(
        self,
        loop: Loop,
        unit_options: Callable[[str | None], UnitOptions],
        pids_dir: Path,
        hub_socket: Path,
        runtime_dir: Path,
        emit: Callable[[core.Event], None],
        log: Log,
        credential: Callable[[str, Path, Callable[[], None] | None], Path | None],
        hub_db: Path | None = None,
    ) -> None:
        self.loop = loop
        self._unit_options = unit_options  # credential path -> options (built from config)
        self.pids_dir = pids_dir
        self.runtime_dir = runtime_dir
        self._emit_now = emit
        self._log = log
        self._credential = credential
        self._tracks: dict[str, Track] = {}
        self._by_unit: dict[str, str] = {}
        # While adopt() runs, events go into its list (after their unit's Adopted)
        # instead of to the core, which must see the adoptions first.
        self._adopting: list[core.Event] | None = None
        make_dirs(pids_dir, pids_dir.parent, symlink_ok=True)  # the workdir's: fs.py's rule
        runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.memory = UnitMemory(loop, runtime_dir / MEMORY_FILE, log)
        self.bus = BusConnection(loop, system_bus_address())
        self.bus.on_lost = self._on_bus_lost
        self.version = parse_version(self.bus.call_sync(manager_version()))
        check_reply(self.bus.call_sync(subscribe()))
        rule = match_properties_changed()
        check_reply(self.bus.call_sync(add_match(rule)))
        self.bus.on_signal(rule, self._on_properties_changed)
        self.lastwords = LastWords(loop, log)
        self.readiness = ReadinessWatcher(
            loop,
            pids_dir,
            hub_socket,
            self._ready,
            log,
            lambda name, why: self._emit(core.Waiting(name, why)),
            hub_db,
            lambda name: self._emit(core.WatchdogPing(name)),
        )

    # -- start-up: adopt what survived us -------------------------------------

    def _ensure_slice(self) -> None:
        """A transient slice with the configured limits, unless a unit file provides one."""
        opts = self._unit_options(None)
        reply = self.bus.call_sync(start_transient_unit(opts.slice, slice_properties(opts)))
        try:
            check_reply(reply)
        except SystemdError as e:
            if e.name != ERROR_UNIT_EXISTS:
                self._log.info("supervisor", f"cannot create {opts.slice}: {e}")
            # else: installed (units/kissbot.slice) or already running: it stays as it is

    def child_pids(self) -> set[int]:
        """Only journalctl's (lastwords.py): the units are systemd's children, not ours."""
        return self.lastwords.child_pids()

    def adopt(self, specs: dict[str, core.ProcessSpec], now: float) -> list[core.Event]:
        """Events for the kissbot units already there; stop those no longer wanted."""
        self._ensure_slice()
        events: list[core.Event] = []
        self._adopting = events
        try:
            self._adopt(specs, now, events)
        finally:
            self._adopting = None
        return events

    def _adopt(
        self, specs: dict[str, core.ProcessSpec], now: float, events: list[core.Event]
    ) -> None:
        self.memory.keep_only(specs)
        reply = self.bus.call_sync(list_units_by_patterns([], ["kissbot-*.service"]))
        for info in parse_list_units(reply):
            name = name_of_unit(info.name)
            if name is None:
                continue
            if name not in specs:
                self._log.info(name, f"{info.name} is not in the config any more; stopping it")
                self._call(name, "stop", stop_unit(info.name))
                continue
            service = parse_get_all(
                self.bus.call_sync(get_all_properties(info.path, SERVICE_INTERFACE))
            )
            track = self._track(specs[name])
            track.active, track.sub = info.active_state, info.sub_state
            pid = int(service.get("MainPID", 0))
            if info.active_state in ("active", "activating", "reloading") and pid > 0:
                track.pid = pid
                started = int(service.get("ExecMainStartTimestampMonotonic", 0)) / 1e6
                ready = info.active_state == "active" and specs[name].ready in ("notify", "none")
                track.ready_sent = ready
                events.append(
                    core.Adopted(
                        name,
                        pid,
                        started_at=started or now,
                        ready=ready,
                        # Ours when we last started it, and systemd's since (UnitMemory).
                        restarts=(self.memory.get(name, "restarts") or 0)
                        + int(service.get("NRestarts", 0)),
                    )
                )
                if not ready or specs[name].liveness_every > 0:  # liveness: checked all along
                    # Once the loop runs: a Ready now would reach the core before
                    # the adoption it belongs to.
                    self.loop.call_later(
                        0.0,
                        functools.partial(
                            self.readiness.watch,
                            name,
                            specs[name].ready,
                            functools.partial(self._main_pid, name),
                            specs[name].liveness_every,
                        ),
                    )
                    # The listing's ActiveState may be older than the MainPID just
                    # read, and the signals sent before this unit was tracked were
                    # not ours to apply: a READY=1 in between would be lost and the
                    # process left "starting" for good. Ask again, now that every
                    # later signal reaches the track.
                    self.bus.send(
                        get_all_properties(info.path, UNIT_INTERFACE),
                        functools.partial(self._refreshed, name, UNIT_INTERFACE),
                    )
            else:
                # Failed, or waiting in auto-restart: start afresh under our own backoff.
                self._call(name, "stop", stop_unit(info.name))
                self._call(name, "reset", reset_failed_unit(info.name))

    # -- carrying out actions ------------------------------------------------

    def execute(self, action: core.Action) -> None:
        match action:
            case core.Spawn(spec, restarts):
                self.memory.set(spec.name, restarts=restarts)
                self._spawn(spec)
            case core.Kill(name, _pid, sig, group):
                unit = unit_of(name)
                if name in self._tracks:
                    self._tracks[name].stopping = True
                if sig == signal.SIGTERM and not group:
                    self._call(name, "stop", stop_unit(unit))
                else:
                    self._call(name, "kill", kill_unit(unit, "all" if group else "main", sig))
            case core.Hold(name, parked):
                self._hold(name, parked=parked)
            case core.Release(name):
                self._hold(name, parked=False)
                track = self._tracks.pop(name, None)
                if track is not None:
                    self._by_unit.pop(track.unit, None)
                self._remove_credential(name)
                self.memory.forget(name)
            case _:
                pass

    def _track(self, spec: core.ProcessSpec) -> Track:
        track = self._tracks.get(spec.name)
        if track is None:
            track = Track(spec.name, unit_of(spec.name), spec)
            self._tracks[spec.name] = track
            self._by_unit[track.unit] = spec.name
        track.spec = spec
        return track

    def _spawn(self, spec: core.ProcessSpec) -> None:
        track = self._track(spec)
        if not spec.is_hub:
            remove_stale_flags(self.pids_dir, spec.name)
        try:
            track.credential = self._credential(
                spec.name,
                self._credentials_dir(spec.name),
                functools.partial(self._resume_spawn, spec),
            )
            props = self._properties(spec, track.credential)
        except CredentialPending:
            return  # the token worker writes it; _resume_spawn comes once it has
        except Exception as e:  # a token or an argv problem: this process only
            self._emit(core.SpawnFailed(spec.name, str(e)))
            return
        track.starting = True
        track.stopping = False
        track.ready_sent = False
        if track.active == "activating" and track.sub == "auto-restart":
            # systemd holds a restart for later (RestartUSec is our backoff's cap); ours
            # comes now. StartUnit would wait for systemd's timer; RestartUnit does not.
            self.bus.send(restart_unit(track.unit), lambda r: self._started(spec.name, r))
            return
        # Only the digest waits for the reply, not the properties: a fleet's start has
        # hundreds in flight, and their objects would be the daemon's heap for good.
        digest = fingerprint(props)
        self.bus.send(
            start_transient_unit(track.unit, props),
            lambda r: self._transient_started(spec.name, digest, r, retried=False),
        )

    def _resume_spawn(self, spec: core.ProcessSpec) -> None:
        """A start that waited for its credential file, tried again (unless the process
        was forgotten meanwhile)."""
        track = self._tracks.get(spec.name)
        if track is not None and track.spec is spec:
            self._spawn(spec)

    def _properties(self, spec: core.ProcessSpec, token: Path | None) -> list[Property]:
        """The unit's properties, with its token's file (``token``), if it has one."""
        return transient_properties(spec, self._unit_options(None if token is None else str(token)))

    def _transient_started(self, name: str, digest: int, reply: Message, *, retried: bool) -> None:
        try:
            check_reply(reply)
        except SystemdError as e:
            track = self._tracks.get(name)
            if track is None or e.name != ERROR_UNIT_EXISTS:
                self._start_failed(name, str(e))
                return
            if not retried:
                # A failed unit keeps its name until reset; forget it and try once more.
                # (A unit nothing refers to is unloaded then: a bot, always.)
                self._call(name, "reset", reset_failed_unit(track.unit))
                # The same start: its credential file is written already.
                props = self._properties(track.spec, track.credential)
                again = fingerprint(props)
                self.bus.send(
                    start_transient_unit(track.unit, props),
                    lambda r: self._transient_started(name, again, r, retried=True),
                )
                return
            # Still loaded, stopped: the hub, which the bots' Wants=/After= refer to, and
            # systemd 252 unloads no unit something refers to, nor lets a loaded transient
            # unit change its ExecStart and the rest. With the properties we want, it can
            # simply be started again (the reset above cleared a failed state).
            if self.memory.get(name, "created") == digest:
                self.bus.send(start_unit(track.unit), lambda r: self._started(name, r))
                return
            # Created with other properties (a reload changed them), or we cannot tell
            # (no record of them): starting it would run the old command. Only once
            # every unit referring to it has stopped can it be created afresh.
            self._start_failed(
                name,
                f"{track.unit} is still loaded with other settings than the config's "
                "(the bots' units refer to it); it can be created afresh once the bots "
                "are stopped",
            )
            return
        self.memory.set(name, created=digest)

    def _started(self, name: str, reply: Message) -> None:
        try:
            check_reply(reply)
        except SystemdError as e:
            self._start_failed(name, str(e))

    def _start_failed(self, name: str, error: str) -> None:
        track = self._tracks.get(name)
        if track is not None:
            track.starting = False
        self._remove_credential(name)
        self._emit(core.SpawnFailed(name, f"systemd refused to start it: {error}"))

    def _hold(self, name: str, *, parked: bool) -> None:
        track = self._tracks.get(name)
        if track is None or track.pid is not None:
            return
        if track.sub == "auto-restart":
            # A unit made by an earlier version, with systemd's own restart: cancel it.
            self._call(name, "stop", stop_unit(track.unit))
        if not parked:
            # Stopped, not failed: nothing for systemctl --failed to list.
            self._call(name, "reset", reset_failed_unit(track.unit))
        self._remove_credential(name)

    def _call(self, name: str, what: str, msg: Message) -> None:
        """A call whose only answer that matters is a refusal: say it."""
        self.bus.send(msg, functools.partial(self._answered, name, what))

    def _answered(self, name: str, what: str, reply: Message) -> None:
        try:
            check_reply(reply)
        except SystemdError as e:
            if e.name not in GONE_ERRORS:
                self._log.info(name, f"systemd refused to {what} {unit_of(name)}: {e}")

    # -- unit changes ------------------------------------------------------------

    def _on_properties_changed(self, msg: Message) -> None:
        change = parse_properties_changed(msg)
        unit = unit_name_of_path(change.path)
        name = self._by_unit.get(unit or "")
        if name is None:
            return
        wanted = WANTED.get(change.interface, ())
        if any(prop in change.invalidated for prop in wanted):
            # Values not sent with the signal (not so in systemd 252): ask for them.
            # Applying the signal's values now, and not a GetAll per signal, also
            # keeps the order systemd sent them in (Service, then Unit).
            self.bus.send(
                get_all_properties(change.path, change.interface),
                functools.partial(self._refreshed, name, change.interface),
            )
            return
        self._apply(name, change.interface, change.changed)

    def _refreshed(self, name: str, interface: str, reply: Message) -> None:
        try:
            props = parse_get_all(reply)
        except SystemdError:
            return  # the unit is gone (unloaded): its signals said so already
        self._apply(name, interface, props)

    def _apply(self, name: str, interface: str, props: dict[str, object]) -> None:
        track = self._tracks.get(name)
        if track is None:
            return
        if interface == UNIT_INTERFACE:
            job = props.get("Job")
            if isinstance(job, tuple) and len(job) == 2:
                track.job = str(job[1]) if job[0] else None
            track.active = str(props.get("ActiveState", track.active))
            track.sub = str(props.get("SubState", track.sub))
            if track.active == "active" and track.pid and track.spec.ready in ("notify", "none"):
                self._ready(name)
            if track.active in ("inactive", "failed") and not track.starting and not track.pid:
                # Down for good (no auto-restart pending): the token file goes too. Not
                # with a main PID: systemd's first signals of a start carry the new
                # MainPID (Service), then a still "inactive" state (Unit).
                self._remove_credential(name)
            return
        if interface != SERVICE_INTERFACE or "MainPID" not in props:
            return
        pid = int(props["MainPID"])  # type: ignore[call-overload]
        if track.pid is not None and pid != track.pid:
            self._exited(track, props)
        if pid and pid != track.pid:
            track.pid = pid
            # Not a start of ours: an administrator's systemctl start or restart, or
            # systemd's own restart after a crash (the core tells them apart).
            outside, track.starting = not track.starting, False
            # A new life, whoever started it: a stop of ours before it says nothing
            # of how this one ends (its failure gets its last words too).
            track.stopping = False
            self.lastwords.flush(name)  # a held exit reaches the core before this start
            self._emit(core.Spawned(name, pid, outside=outside))
            self.readiness.watch(
                name,
                track.spec.ready,
                functools.partial(self._main_pid, name),
                track.spec.liveness_every,
            )

    def _main_pid(self, name: str) -> int | None:
        track = self._tracks.get(name)
        return None if track is None else track.pid

    def _exited(self, track: Track, props: dict[str, object]) -> None:
        pid, track.pid = track.pid, None
        assert pid is not None
        track.ready_sent = False
        self.readiness.forget(track.name)
        code_kind = int(props.get("ExecMainCode", CLD_EXITED))  # type: ignore[call-overload]
        status = int(props.get("ExecMainStatus", 0))  # type: ignore[call-overload]
        result = str(props.get("Result", ""))
        # Stopped by a job (not a crash, not its own start job failing: those find
        # the unit active or activating), which the core did not ask for if it has
        # no stop of its own under way: an administrator's stop or restart.
        external = track.job is not None and track.active == "deactivating"
        reason = TELLING_RESULTS.get(result)
        never_ran = None
        if code_kind == CLD_EXITED and result == "exit-code" and reason is None:
            # The program never ran: systemd could not set the process up.
            reason = never_ran = setup_failure(status)
        if code_kind in (CLD_KILLED, CLD_DUMPED):
            event = core.Exited(track.name, pid, signal=status, reason=reason, external=external)
        else:
            event = core.Exited(track.name, pid, code=status, reason=reason, external=external)
        failed = event.signal is not None or event.code != 0
        if not failed or external or track.stopping or never_ran is not None:
            # Asked for, clean, or a unit that could not be set up (its program never
            # ran, so it printed nothing): no words of its own to look for.
            self._emit(event)
            return
        self.lastwords.hold(
            track.name,
            track.unit,
            pid,
            lambda lines: self._emit(replace(event, last_lines=lines)),
        )

    def _ready(self, name: str) -> None:
        track = self._tracks.get(name)
        if track is None or track.pid is None or track.ready_sent:
            return
        track.ready_sent = True
        self._emit(core.Ready(name))

    def _emit(self, event: core.Event) -> None:
        if self._adopting is not None:
            self._adopting.append(event)
        else:
            self._emit_now(event)

    def _on_bus_lost(self) -> None:
        # Without the bus nothing can be supervised; exiting lets systemd restart us
        # (Restart=on-failure), and the new instance adopts the units.
        self._log.info("supervisor", "lost the system bus connection; exiting to be restarted")
        os._exit(1)

    # -- credentials -------------------------------------------------------------

    def _credentials_dir(self, name: str) -> Path:
        return self.runtime_dir / "credentials" / name

    def _remove_credential(self, name: str) -> None:
        from ...tokens.states import remove_credentials

        remove_credentials(self._credentials_dir(name))

    # -- queries -----------------------------------------------------------------

    def note(self, name: str, kind: NoteKind, message: str) -> None:
        """Supervisor lines go to our own journal stream; units have theirs."""

    def own_job(self) -> str | None:
        """The type of the job systemd has queued for the supervisor's own unit
        (``stop``, ``restart``, ...), or None when there is none or it cannot be had.

        A SIGTERM says "stop" either way; the job says whether the unit comes
        back at once (``systemctl restart``, a package upgrade), in which case
        the fleet is left running for the next supervisor to adopt.
        """
        return own_job_type(self.bus, os.getpid())

    def close(self, all_stopped: bool = False) -> None:
        """Free everything; ``all_stopped``: the core saw every process stop (a shutdown).

        Then no unit of ours can start again, so every token file goes. They are
        otherwise removed when a unit's state turns inactive, but the signal that
        says so may come after the last exit has ended the loop.
        """
        if all_stopped:
            for name, track in self._tracks.items():
                if track.pid is None:
                    self._remove_credential(name)
        self.readiness.close()
        self.lastwords.close()
        self.memory.flush()  # the loop may not turn again
        with contextlib.suppress(OSError, BusError):
            # Calls may still be queued behind the bus's limit at the exit: a
            # StopUnit that cancels a bot's pending auto-restart, a ResetFailedUnit.
            if not self.bus.drain(DRAIN_SEC):
                self._log.info(
                    "supervisor", f"systemd did not answer every call within {DRAIN_SEC:g} s"
                )
            self.bus.close()
