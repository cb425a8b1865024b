"""The supervision core: every decision, no I/O.

:class:`Core` is a state machine fed with events (a process was spawned, became
ready, exited, pinged its watchdog; an operator command; a reload; a tick of
the clock) and answering with actions (spawn this, signal that, say this,
everything has stopped). Time is an argument: the core never reads a clock,
spawns, kills or sleeps, so every history can be replayed in a unit test with
a fake clock. Both backends feed it the same events and carry out the same
actions; :meth:`Core.next_deadline` tells them when to wake it up, and when
nothing is pending it returns None so an idle supervisor sleeps for good.

Decisions held here:

* desired state per process (``want``), sticky: a stopped process stays
  stopped until started, a reload leaves it alone;
* ordering: the hub ready before any bot starts; bots then start together;
* restarts with exponential backoff and a cap, failures forgotten after a
  stable period, parking after ``give_up_after`` failures with a reason;
* restarts of many bots (an operator's, or every bot for a new hub) in turns
  (:class:`Rollout`): a bot is stopped only when a login slot is free for it,
  and at most N of them are down at once when asked;
* start timeouts and watchdog timeouts (a ping may come from the process, or from
  the supervisor: its liveness check, a write to the liveness file);
* graceful shutdown: bots first, then the hub; SIGTERM, then SIGKILL of the
  whole process group after the stop timeout.

Why one module of 1,300 lines: it is one state machine, and its transitions are
read together (a crash, the backoff it starts, the tick that ends it, the
parking that stops it); split, each rule would be a jump away from the state
it changes. Everything it returns and takes is a plain record defined here.
"""

from __future__ import annotations

import signal as _signal
from collections import deque
from collections.abc import Iterable
from enum import StrEnum

from ..kissbot.names import HUB
from ..protocol import NoteKind
from .records import field, record

# typing is imported for the type checker only (it costs the daemon 0.4 MiB).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    ReadyMode = Literal["none", "notify", "file", "socket", "protocol", "db"]
    StopCause = Literal["command", "restart", "hub-restart", "shutdown", "removed", "fault"]

# How both backends describe a watchdog kill: the native fault text starts with it,
# the systemd backend reports Result=watchdog with exactly this reason.
WATCHDOG_FAULT = "watchdog timeout"
# A bot whose liveness file stayed silent (ProcessSpec.liveness_file): the same kill and
# restart as a watchdog timeout, said in the operator's terms.
HUNG_FAULT = "hung"
MEMORY_FAULT = "memory limit"

# A process under the supervisor's own liveness check (ProcessSpec.liveness) is checked
# this many times per watchdog period: it is killed after that many failed checks in a row.
LIVENESS_CHECKS = 3

# An exit by one of these signals is a clean stop for restart=on-failure, as in systemd.
CLEAN_SIGNALS = frozenset({_signal.SIGHUP, _signal.SIGINT, _signal.SIGTERM, _signal.SIGPIPE})


class Phase(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    FAILED = "failed"


@record
class ProcessSpec:
    """What to run for one process; built from the config by :mod:`.fleet`."""

    name: str  # a channel login, or "hub"
    argv: tuple[str, ...]
    ready: ReadyMode
    watchdog_sec: float = 0.0
    start_timeout_sec: float = 0.0
    oom_score_adjust: int = 0  # the kernel's /proc/PID/oom_score_adj
    # Bytes of memory it may use before it is killed and restarted (None: no cap).
    # systemd enforces it (the unit's MemoryMax=); natively the backend samples the
    # process's RSS (MemorySample) and the core decides.
    memory_max: int | None = None
    # The supervisor's own liveness check of a process that sends no WATCHDOG=1 (the
    # hub's, hub.liveness_sec): what it checks, or None. Its WatchdogPings come from
    # the supervisor, so the core keeps the deadline under either backend.
    liveness: str | None = None
    # bot.liveness: system-log: the file (relative to the workdir) whose writes are the
    # process's pings, seen by the supervisor's inotify watch (kissbot/systemlog.py);
    # ``watchdog_sec`` is the silence allowed. ``liveness`` says what it checks, as for
    # the hub's check, so that no backend gives the process a watchdog of its own.
    liveness_file: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.name == HUB

    @property
    def liveness_every(self) -> float:
        """Seconds between two liveness checks by the supervisor (0: none, or a file
        watched for writes, which needs no check)."""
        if not self.liveness or self.liveness_file:
            return 0.0
        return self.watchdog_sec / LIVENESS_CHECKS


@record
class Policy:
    delay_sec: float = 1.0
    max_delay_sec: float = 60.0
    reset_after_sec: float = 60.0
    give_up_after: int = 5
    stop_timeout_sec: float = 10.0
    restart_always: bool = False
    hub_restart_bots: bool = True
    # systemd enforces WatchdogUSec itself and reports the kill as an exit.
    backend_watchdog: bool = False
    # Bot starts allowed in any LOGIN_WINDOW_SEC (Twitch's login limit; 0: no pacing).
    logins_per_window: int = 0
    # A parked process is tried again by itself after this long, doubling at each
    # parking in a row up to the max (0: parked until an operator starts it).
    retry_parked_sec: float = 0.0
    retry_parked_max_sec: float = 0.0

    def parked_retry_delay(self, parkings: int) -> float:
        """Delay before the try after parking number ``parkings`` (1-based) in a row."""
        delay = self.retry_parked_sec * 2.0 ** max(parkings - 1, 0)
        return min(delay, max(self.retry_parked_max_sec, self.retry_parked_sec))

    def backoff(self, failures: int) -> float:
        """Delay before restart number ``failures`` (1-based) of a failing process."""
        return min(self.delay_sec * 2.0 ** max(failures - 1, 0), self.max_delay_sec)


# --- events ----------------------------------------------------------------


@record
class Adopted:
    """Found already running at start-up (systemd units outlive the supervisor)."""

    name: str
    pid: int
    started_at: float  # on the core's clock (CLOCK_MONOTONIC)
    ready: bool
    restarts: int = 0


@record
class Spawned:
    name: str
    pid: int
    # Started by the service manager without the supervisor asking: an
    # administrator's `systemctl start` or `restart` of the unit. Respected: the
    # process is wanted from then on.
    outside: bool = False


@record
class SpawnFailed:
    name: str
    error: str


@record
class Ready:
    name: str


@record
class Exited:
    name: str
    pid: int
    code: int | None = None  # exit status, or None when killed by a signal
    signal: int | None = None
    reason: str | None = None  # what the backend knows beyond the status (systemd's Result)
    # The process's own last output lines (its traceback's last line): why, in its words.
    last_lines: tuple[str, ...] = ()
    # A stop or restart the supervisor did not ask for was under way in the service
    # manager (an administrator's `systemctl stop` or `restart`): respected, and
    # neither a failure nor an exit "by itself".
    external: bool = False


@record
class WatchdogPing:
    name: str


@record
class StatusText:
    name: str
    text: str


@record
class MemorySample:
    """The resident memory of a process with a memory cap, measured by the backend."""

    name: str
    pid: int
    rss_bytes: int


@record
class Waiting:
    """Why a starting process is not ready yet, in the backend's words (its reason
    until it is ready): e.g. another process holds the hub's socket path."""

    name: str
    why: str


@record
class Stopping:
    """The process announced STOPPING=1: it is on its way out by itself."""

    name: str


@record
class Start:
    names: tuple[str, ...]


@record
class Stop:
    names: tuple[str, ...]


@record
class Restart:
    """Restart these processes. Bots that run are restarted in turn, never stopped
    before they can start again soon (see :class:`Rollout`); ``rolling`` > 0 also
    keeps at most that many of them down at once (a code deploy)."""

    names: tuple[str, ...]
    rolling: int = 0


@record
class Gate:
    """Why a process may not start now (a token problem), or None to lift it."""

    name: str
    token_state: str
    blocked: str | None


@record
class Gates:
    """Several gates applied together (the supervisor's token check covers every process)."""

    gates: tuple[Gate, ...]


@record
class Reload:
    specs: tuple[ProcessSpec, ...]
    policy: Policy
    gates: tuple[Gate, ...] = ()  # token gates of the new fleet, applied before any start


@record
class Shutdown:
    pass


@record
class Batch:
    """Events applied together before anything starts (start-up: adoptions and gates)."""

    events: tuple[Event, ...]


@record
class Tick:
    """Time passed; sent when :meth:`Core.next_deadline` is reached."""


@record
class Stalled:
    """The supervisor itself did not run for ``seconds`` (paused, swapped out, busy).

    Sent before the Tick that comes late. The processes' silence in that time is
    no evidence against them (their pings may have been lost on a full queue):
    every deadline that watches them starts again from now.
    """

    seconds: float


Event = (
    Adopted
    | Spawned
    | SpawnFailed
    | Ready
    | Exited
    | WatchdogPing
    | StatusText
    | MemorySample
    | Waiting
    | Stopping
    | Start
    | Stop
    | Restart
    | Gate
    | Gates
    | Reload
    | Shutdown
    | Tick
    | Stalled
    | Batch
)

# --- actions ---------------------------------------------------------------


@record
class Spawn:
    spec: ProcessSpec
    # The count this incarnation starts with: a backend whose processes outlive the
    # supervisor (systemd) keeps it, so that an adoption can give it back.
    restarts: int = 0


@record
class Kill:
    """Send ``signal`` to the process (``group``: to its whole process group / unit)."""

    name: str
    pid: int
    signal: int
    group: bool = False


@record
class Note:
    """Something an operator should see: logged, and streamed as an event."""

    name: str
    kind: NoteKind
    message: str


@record
class Release:
    """The process is gone from the fleet (removed by a reload); free its resources."""

    name: str


@record
class Hold:
    """The process is down and must stay down until the next Spawn.

    Nothing for the native backend to do. Under systemd: ``parked``, the failed
    unit is left as it is, for ``systemctl --failed`` and ``systemctl status`` to
    show with its result; otherwise (stopped by an operator, or at a shutdown)
    its failed state is cleared.
    """

    name: str
    parked: bool = False


@record
class Finished:
    """Shutdown is complete: every process has exited."""


Action = Spawn | Kill | Note | Hold | Release | Finished


# --- per-process state -------------------------------------------------------


@record(frozen=False)
class Proc:
    spec: ProcessSpec
    want: bool = True
    phase: Phase = Phase.STOPPED
    pid: int | None = None
    started_at: float | None = None
    ready_at: float | None = None
    restarts: int = 0  # automatic and requested restarts, like systemd's NRestarts
    watchdog_timeouts: int = 0  # exits caused by a watchdog timeout (for metrics)
    last_pid: int | None = None  # the PID of the latest incarnation, kept after its exit
    restart_pending: bool = False  # the next spawn is a restart after a failure
    failures: list[float] = field(factory=list)  # times of recent failures
    startup_exits: list[int | None] = field(factory=list)  # codes, for the reason
    last_exit: str | None = None
    last_words: str | None = None  # its own last output line at its last exit, quoted
    reason: str | None = None
    status_text: str | None = None
    token_state: str = "unchecked"
    blocked: str | None = None  # token problem that keeps it from starting
    backoff_until: float | None = None
    retry_at: float | None = None  # parked: tried again by itself then
    parkings: int = 0  # parkings in a row, each tried again later (the retry's pace)
    probation: bool = False  # a retry after a parking: one more failure parks it again
    stop_deadline: float | None = None
    stop_cause: StopCause | None = None
    fault: str | None = None  # why the supervisor stopped it (start or watchdog timeout)
    killed: bool = False
    start_deadline: float | None = None
    watchdog_deadline: float | None = None
    hub_generation: int = 0
    removed: bool = False
    adopted: bool = False  # found running at start-up, not spawned by this supervisor
    rollout: Rollout | None = None  # waiting in its queue for its turn to restart

    @property
    def alive(self) -> bool:
        return self.pid is not None

    @property
    def spawning(self) -> bool:
        """A Spawn went out and the backend has not answered (Spawned or SpawnFailed) yet."""
        return self.pid is None and self.phase is Phase.STARTING


@record(frozen=False)
class Rollout:
    """A restart of several running bots in turns: each is stopped only when it can
    start again soon, so the fleet stays up (:meth:`Core._roll`).

    A bot is stopped for its turn only when a login slot is free for it (none is
    spoken for by another bot on its way up), the hub lets bots start, and, for
    every rollout with a ``limit`` that names it, fewer than ``limit`` of that
    rollout's bots are down. Down: wanted, not parked, not blocked, and not
    running (stopping, stopped, starting, backing off), whatever the cause, a
    crash included. A turn is done when the bot runs again, is parked, or is
    stopped or removed meanwhile. A failure is the operator's outcome for that
    bot at once (``commands.settled``), and the rolling restart goes on; but a
    bot that backs off is still down, and in its turn, until it runs or is
    parked, so a deploy that breaks every bot takes them down N at a time. Bots
    that were down already when the restart was asked for are started at once,
    and their turns are under way from then.
    """

    cause: StopCause  # "restart" (an operator's) or "hub-restart" (a new hub is ready)
    limit: int = 0  # at most this many of ``members`` down at once (0: login slots only)
    members: set[str] = field(factory=set)  # the bots it restarts
    queue: list[str] = field(factory=list)  # running, waiting for their turn, in order
    turns: set[str] = field(factory=set)  # stopped for their turn, not settled yet
    total: int = 0
    done: int = 0

    def waiting_text(self) -> str:
        """A queued bot's reason in status."""
        if self.cause == "hub-restart":
            what = "to restart for the new hub"
        else:
            what = "in a rolling restart"
        return f"waiting for its turn {what} ({self.done} of {self.total} done)"


@record
class ProcessStatus:
    """A read-only view of one process, for status output."""

    name: str
    state: Phase
    want: bool
    pid: int | None
    uptime_s: float | None
    restarts: int
    last_exit: str | None
    reason: str | None
    status_text: str | None
    token_state: str
    ready: bool


def describe_exit(code: int | None, sig: int | None) -> str:
    if sig is not None:
        try:
            return f"killed by {_signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exited {code}"


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def _duration(value: float) -> str:
    """A silence as an operator sets it: whole minutes in minutes, else seconds."""
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g} min"
    return _seconds(value)


MAX_WORDS = 160  # characters of a process's own line in a reason
FAILING_ALIKE_MIN = 3  # bots down for the same words: said once for the fleet


def _quoted(lines: tuple[str, ...]) -> str | None:
    """A process's last output line, fit for a one-line reason: quoted, control
    characters as ``?``, blanks folded, cut to MAX_WORDS. None when it said nothing."""
    if not lines:
        return None
    text = " ".join(lines[-1].split())
    text = "".join("?" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c for c in text)
    if len(text) > MAX_WORDS:
        text = text[: MAX_WORDS - 1] + "…"
    return f'"{text}"' if text else None


# Twitch allows a bot account N chat logins per 10 s (20, or 200 when verified), and
# says nothing of when its count restarts: starts are paced by a sliding window,
# which no burst can exceed (a token bucket's burst plus refill can). The window
# is 2 s longer than Twitch's: a bot logs in a second or two after its start, and
# not always after the same delay.
TWITCH_LOGIN_WINDOW_SEC = 10.0
LOGIN_WINDOW_SEC = TWITCH_LOGIN_WINDOW_SEC + 2.0


class Core:
    """The fleet's state and every decision about it (see the module docstring)."""

    def __init__(self, specs: Iterable[ProcessSpec], policy: Policy) -> None:
        self.policy = policy
        self.procs: dict[str, Proc] = {}
        self.shutting_down = False
        self.finished = False
        self.hub_generation = 0  # bumped each time the hub becomes ready
        self.logins: deque[float] = deque()  # bot start times within LOGIN_WINDOW_SEC
        self.login_free_at: float | None = None  # a bot waits for a login slot until then
        self.alike_said = 0  # bots failing alike when that was last said (see _failing_alike)
        self.rollouts: list[Rollout] = []  # restarts of many bots, in turns (oldest first)
        for spec in specs:
            self.procs[spec.name] = Proc(spec=spec)

    # -- queries ---------------------------------------------------------

    def names(self) -> list[str]:
        """Process names, hub first, bots in config order."""
        return sorted(self.procs, key=lambda n: n != HUB)

    def status(self, now: float) -> list[ProcessStatus]:
        out = []
        for name in self.names():
            p = self.procs[name]
            out.append(
                ProcessStatus(
                    name=name,
                    state=self.shown_state(p),
                    want=p.want,
                    pid=p.pid,
                    uptime_s=None if p.started_at is None else max(0.0, now - p.started_at),
                    restarts=p.restarts,
                    last_exit=p.last_exit,
                    reason=self._reason(p, now),
                    status_text=p.status_text,
                    token_state=p.token_state,
                    ready=p.phase is Phase.RUNNING,
                )
            )
        return out

    def _reason(self, p: Proc, now: float) -> str | None:
        if p.rollout is not None:
            return p.rollout.waiting_text()
        if p.retry_at is None or p.phase is not Phase.FAILED or p.reason is None:
            return p.reason
        return f"{p.reason}; trying again by itself in {_seconds(max(0.0, p.retry_at - now))}"

    def failing_alike(self) -> tuple[int, str] | None:
        """The most bots down (backing off or parked) for the same last words, and those
        words, when they are at least FAILING_ALIKE_MIN: an outage, not one bad bot."""
        counts: dict[str, int] = {}
        for p in self._bots():
            if p.last_words and p.phase in (Phase.BACKOFF, Phase.FAILED) and not p.removed:
                counts[p.last_words] = counts.get(p.last_words, 0) + 1
        if not counts:
            return None
        words, n = max(counts.items(), key=lambda item: item[1])
        return (n, words) if n >= FAILING_ALIKE_MIN else None

    def _say_failing_alike(self, out: list[Action]) -> None:
        """Said once for the fleet when it starts, and again each time it doubles."""
        alike = self.failing_alike()
        if alike is None:
            self.alike_said = 0
            return
        n, words = alike
        if n >= max(FAILING_ALIKE_MIN, 2 * self.alike_said):
            self.alike_said = n
            out.append(
                Note("supervisor", NoteKind.FAILING_ALIKE, f"{n} bots failing alike: {words}")
            )

    def shown_state(self, p: Proc) -> Phase:
        """The state status and events show: a stopped process due to start is starting."""
        if p.phase is Phase.STOPPED and p.want and not p.blocked and not self.shutting_down:
            return Phase.STARTING  # waiting for its turn (the hub, or a spawn)
        return p.phase

    def next_deadline(self) -> float | None:
        """The earliest time at which a Tick would change something, or None."""
        times = [] if self.login_free_at is None else [self.login_free_at]
        for p in self.procs.values():
            for t in (
                p.backoff_until,
                p.retry_at,
                p.stop_deadline,
                p.start_deadline,
                p.watchdog_deadline,
            ):
                if t is not None:
                    times.append(t)
        return min(times, default=None)

    # -- the one entry point ---------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        out: list[Action] = []
        self._apply(event, now, out)
        self._reconcile(now, out)
        return out

    def _apply(self, event: Event, now: float, out: list[Action]) -> None:
        match event:
            case Batch(events):
                for inner in events:
                    self._apply(inner, now, out)
            case Adopted():
                self._on_adopted(event, now, out)
            case Spawned(name, pid, outside):
                self._on_spawned(self.procs[name], pid, now, out, outside)
            case SpawnFailed(name, error):
                self._on_spawn_failed(self.procs[name], error, now, out)
            case Ready(name):
                self._on_ready(self.procs[name], now, out)
            case Exited():
                self._on_exited(self.procs[event.name], event, now, out)
            case WatchdogPing(name):
                p = self.procs[name]
                if p.alive and p.phase is not Phase.STOPPING:
                    p.watchdog_deadline = self._watchdog_from(now, p)
            case StatusText(name, text):
                self.procs[name].status_text = text
            case MemorySample(name, pid, rss):
                self._memory_sample(self.procs[name], pid, rss, out)
            case Waiting(name, why):
                p = self.procs[name]
                if p.alive and p.phase is Phase.STARTING:
                    p.reason = why
            case Stopping(name):
                p = self.procs[name]
                if p.alive and p.phase is not Phase.STOPPING:
                    p.phase = Phase.STOPPING
                    p.watchdog_deadline = None
            case Start(names):
                for name in names:
                    self._start_command(self.procs[name], out)
            case Stop(names):
                for name in names:
                    self._stop_command(self.procs[name], now, out)
            case Restart(names, rolling):
                rollout = Rollout(cause="restart", limit=rolling)
                for name in names:
                    self._restart_command(self.procs[name], now, out, rollout)
                if rollout.members:
                    self.rollouts.append(rollout)
            case Gate():
                self._gate(event, out)
            case Gates(gates):
                # All at once, so that no process starts between two of them.
                for gate in gates:
                    self._gate(gate, out)
            case Stalled(seconds):
                self._after_stall(seconds, now, out)
            case Reload(specs, policy, gates):
                self._reload(specs, policy, now, out)
                for gate in gates:
                    self._gate(gate, out)
            case Shutdown():
                if not self.shutting_down:
                    self.shutting_down = True
                    for r in self.rollouts:
                        for name in r.queue:
                            self.procs[name].rollout = None
                    self.rollouts.clear()
                    out.append(Note("supervisor", NoteKind.SHUTDOWN, "stopping bots, then the hub"))
            case Tick():
                self._on_tick(now, out)

    # -- events ------------------------------------------------------------

    def _gate(self, gate: Gate, out: list[Action]) -> None:
        p = self.procs.get(gate.name)
        if p is None:
            return
        p.token_state = gate.token_state
        if gate.blocked != p.blocked:
            p.blocked = gate.blocked
            if gate.blocked and not p.alive and p.want:
                out.append(Note(gate.name, NoteKind.BLOCKED, f"not started: {gate.blocked}"))

    def _on_spawned(
        self, p: Proc, pid: int, now: float, out: list[Action], outside: bool = False
    ) -> None:
        if outside and not p.want and not self.shutting_down and not p.removed:
            # An administrator's systemctl start or restart: theirs to decide.
            p.want = True
            p.reason = None
            p.failures.clear()
            p.startup_exits.clear()
            out.append(
                Note(
                    p.spec.name,
                    NoteKind.COMMAND,
                    "started by the service manager (systemctl start or restart)",
                )
            )
        if p.restart_pending:
            p.restart_pending = False
            p.restarts += 1
        p.pid = pid
        p.last_pid = pid
        p.phase = Phase.STARTING
        p.started_at = now
        p.ready_at = None
        p.killed = False
        p.fault = None
        p.status_text = None
        p.hub_generation = self.hub_generation
        p.backoff_until = None  # systemd may have restarted it before our backoff ran out
        p.adopted = False
        p.start_deadline = now + p.spec.start_timeout_sec if p.spec.start_timeout_sec else None
        p.watchdog_deadline = self._watchdog_from(now, p)
        out.append(Note(p.spec.name, NoteKind.STARTED, f"started (PID {pid})"))
        if p.spec.ready == "none":
            self._on_ready(p, now, out)

    def _watchdog_from(self, now: float, p: Proc) -> float | None:
        if p.spec.watchdog_sec <= 0 or (self.policy.backend_watchdog and not p.spec.liveness):
            return None
        return now + p.spec.watchdog_sec

    def _on_adopted(self, ev: Adopted, now: float, out: list[Action]) -> None:
        p = self.procs.get(ev.name)
        if p is None or p.alive:
            return
        p.pid = ev.pid
        p.last_pid = ev.pid
        p.started_at = ev.started_at
        p.restarts = ev.restarts
        p.phase = Phase.STARTING
        p.adopted = True
        p.watchdog_deadline = self._watchdog_from(now, p)
        out.append(Note(ev.name, NoteKind.ADOPTED, f"adopted, already running (PID {ev.pid})"))
        if p.spec.is_hub:
            # The bots that survived with it talk to this very hub: no reconnect needed.
            self.hub_generation += 1
            for bot in self._bots():
                if bot.adopted:
                    bot.hub_generation = self.hub_generation
        p.hub_generation = self.hub_generation
        if ev.ready:
            p.phase = Phase.RUNNING
            p.ready_at = now

    def _on_spawn_failed(self, p: Proc, error: str, now: float, out: list[Action]) -> None:
        p.phase = Phase.STOPPED
        p.pid = None
        p.last_exit = f"could not start: {error}"
        out.append(Note(p.spec.name, NoteKind.SPAWN_FAILED, f"could not start: {error}"))
        self._count_failure(p, now, None, out)

    def _on_ready(self, p: Proc, now: float, out: list[Action]) -> None:
        if not p.alive or p.phase is not Phase.STARTING:
            return
        p.phase = Phase.RUNNING
        p.ready_at = now
        p.start_deadline = None
        p.reason = None
        out.append(Note(p.spec.name, NoteKind.READY, "ready"))
        if p.spec.is_hub and not p.adopted:  # an adopted hub was counted when adopted
            self.hub_generation += 1
            # Also on its first ready: bots that started without it (hub parked,
            # blocked or stopped) never connected and must be restarted too.
            if self.policy.hub_restart_bots:
                self._restart_bots_for_new_hub(now, out)

    def _restart_bots_for_new_hub(self, now: float, out: list[Action]) -> None:
        # KissBot's hub client connects once and never reconnects: a bot that
        # talked to the previous hub would never see an EventSub event again.
        # In turns under the login limit (no other limit: the bots cannot serve
        # EventSub until restarted), so that the fleet stays in chat meanwhile.
        rollout = next((r for r in self.rollouts if r.cause == "hub-restart"), None)
        in_turn = {n for r in self.rollouts for n in r.turns}
        for p in self._bots():
            if (
                p.alive
                and p.phase in (Phase.STARTING, Phase.RUNNING)
                and p.hub_generation < self.hub_generation
                and p.rollout is None  # queued: its turn comes after this hub is ready
            ):
                if p.spec.name in in_turn:
                    # Down for its turn already (it started before the hub did): now.
                    self._say_hub_restart(p, out)
                    self._begin_stop(p, now, "hub-restart", out)
                    continue
                if rollout is None:
                    rollout = Rollout(cause="hub-restart")
                    self.rollouts.append(rollout)
                rollout.members.add(p.spec.name)
                self._enqueue(rollout, p)

    def _say_hub_restart(self, p: Proc, out: list[Action]) -> None:
        out.append(Note(p.spec.name, NoteKind.RESTARTING, "restarting to reconnect to the new hub"))

    # -- rolling restarts ----------------------------------------------------

    def _enqueue(self, rollout: Rollout, p: Proc) -> None:
        rollout.queue.append(p.spec.name)
        rollout.total += 1
        p.rollout = rollout

    def _is_down(self, p: Proc | None) -> bool:
        """Down for a rolling restart's limit: wanted, and neither running nor parked
        (nor kept from starting by its token: it would hold a turn for ever)."""
        if p is None or p.removed or not p.want or p.blocked:
            return False
        return p.phase not in (Phase.RUNNING, Phase.FAILED)

    def _turn_over(self, p: Proc | None) -> bool:
        """A bot's turn is over: running again, parked, or no longer wanted (stopped,
        removed, blocked). Not while it backs off: its failure is the command's outcome
        at once, but it is down until it runs or is parked, and the limit holds."""
        if p is None or p.removed or not p.want:
            return True
        if p.phase in (Phase.RUNNING, Phase.FAILED):
            return True
        return bool(p.blocked) and not p.alive and not p.spawning

    def _roll(self, now: float, out: list[Action]) -> None:
        """Stop the bots whose turn has come (after the spawns of this round, so that
        the login slots they took are counted)."""
        for r in self.rollouts:
            self._settle_turns(r)
        # A restart's limit holds until none of its bots waits for a turn or is in
        # one, in any restart (a later one may have taken a bot over).
        busy = {n for r in self.rollouts for n in (*r.queue, *r.turns)}
        self.rollouts = [r for r in self.rollouts if not busy.isdisjoint(r.members)]
        if not any(r.queue for r in self.rollouts) or self._hub_gate() is not None:
            return  # nothing to stop, or the bots could not start again (the hub)
        free = self._free_logins(now)
        if free is not None:
            # Login slots spoken for: bots on their way down for a restart, and bots
            # down that will start as soon as they may.
            free -= sum(
                1
                for q in self._bots()
                if q.want
                and not q.blocked
                and not q.removed
                and (
                    (q.phase is Phase.STOPPED and not q.alive and not q.spawning)
                    or (q.phase is Phase.STOPPING and q.stop_cause in ("restart", "hub-restart"))
                )
            )
        limited = [r for r in self.rollouts if r.limit > 0]
        down = {id(r): sum(self._is_down(self.procs.get(n)) for n in r.members) for r in limited}
        for r in self.rollouts:
            kept: list[str] = []
            for name in r.queue:
                p = self.procs[name]
                if free is not None and free <= 0:
                    kept.append(name)
                    continue
                over = [s for s in limited if name in s.members and down[id(s)] >= s.limit]
                if over:
                    kept.append(name)
                    continue
                p.rollout = None
                r.turns.add(name)
                for s in limited:
                    if name in s.members:
                        down[id(s)] += 1
                if free is not None:
                    free -= 1
                if r.cause == "hub-restart":
                    self._say_hub_restart(p, out)
                elif r.total > 1:  # (one bot's restart is said once: "restart requested")
                    said = f"its turn in a rolling restart ({r.done} of {r.total} done)"
                    out.append(Note(name, NoteKind.RESTARTING, f"restarting: {said}"))
                self._begin_stop(p, now, r.cause, out)
            r.queue = kept
        if free is not None and free <= 0 and self.logins:
            # Woken when the oldest login leaves the window: a slot for the next turn.
            free_at = self.logins[0] + LOGIN_WINDOW_SEC
            self.login_free_at = (
                free_at if self.login_free_at is None else min(self.login_free_at, free_at)
            )

    def _settle_turns(self, r: Rollout) -> None:
        """Turns that are over count as done; a queued bot that is gone, stopped, or
        down by itself meanwhile (a crash: it restarts anyway) leaves the queue."""
        for name in list(r.turns):
            if self._turn_over(self.procs.get(name)):
                r.turns.discard(name)
                r.done += 1
        kept: list[str] = []
        for name in r.queue:
            p = self.procs.get(name)
            if p is None or p.removed or not p.want or self.shutting_down:
                if p is not None:
                    p.rollout = None
                r.done += 1
            elif not p.alive or p.phase not in (Phase.STARTING, Phase.RUNNING):
                p.rollout = None
                if self._turn_over(p):
                    r.done += 1
                else:
                    r.turns.add(name)  # its restart is under way: its turn, done when settled
            else:
                kept.append(name)
        r.queue = kept

    def _free_logins(self, now: float) -> int | None:
        """Login slots free now (None: no pacing)."""
        limit = self.policy.logins_per_window
        if limit <= 0:
            return None
        # The same sum as the deadlines (not now - window: floats round), so a tick at
        # that deadline always frees the slot.
        while self.logins and now >= self.logins[0] + LOGIN_WINDOW_SEC:
            self.logins.popleft()
        return limit - len(self.logins)

    def _on_exited(self, p: Proc, ev: Exited, now: float, out: list[Action]) -> None:
        if p.pid != ev.pid:
            return  # a late report about an earlier incarnation
        how = describe_exit(ev.code, ev.signal)
        ran_for = now - p.started_at if p.started_at is not None else 0.0
        was_ready = p.ready_at is not None
        cause, fault = p.stop_cause, p.fault or ev.reason
        p.pid = None
        p.phase = Phase.STOPPED
        p.started_at = None
        p.stop_deadline = p.start_deadline = p.watchdog_deadline = None
        p.stop_cause = None
        p.fault = None
        p.last_exit = how if fault is None else f"{how} ({fault})"
        p.last_words = _quoted(ev.last_lines)
        if fault is not None and fault.startswith((WATCHDOG_FAULT, HUNG_FAULT)):
            p.watchdog_timeouts += 1
        if cause in ("command", "shutdown", "removed"):
            out.append(Note(p.spec.name, NoteKind.STOPPED, f"stopped ({how})"))
            return
        if cause in ("restart", "hub-restart"):
            p.restart_pending = True
            out.append(Note(p.spec.name, NoteKind.EXITED, f"{how}; starting again"))
            return
        if cause is None and fault is None and ev.external:
            # Neither ours nor its own doing: the service manager was asked to stop
            # or restart it. A restart brings it back by itself (Spawned outside).
            p.want = False
            p.restart_pending = True  # counted if it comes back
            p.reason = "stopped by the service manager (systemctl stop or restart)"
            out.append(Note(p.spec.name, NoteKind.STOPPED, f"{p.reason}; {how}"))
            return
        # Nobody asked for this exit (or the supervisor stopped it for a fault).
        if was_ready and ran_for >= self.policy.reset_after_sec:
            p.failures.clear()
            p.startup_exits.clear()
            p.probation = False  # it ran well after a retry: healthy again
            p.parkings = 0
        clean = fault is None and (
            ev.code == 0 or (ev.signal is not None and ev.signal in CLEAN_SIGNALS)
        )
        if clean and not self.policy.restart_always:
            p.want = False
            p.reason = f"{how} by itself; not restarted (restart.mode is on-failure)"
            out.append(Note(p.spec.name, NoteKind.EXITED, p.reason))
            return
        out.append(Note(p.spec.name, NoteKind.EXITED, p.last_exit))
        if not p.want:
            return
        self._count_failure(p, now, None if was_ready else (ev.code if fault is None else -1), out)
        if not p.spec.is_hub:
            self._say_failing_alike(out)

    def _count_failure(
        self, p: Proc, now: float, startup_code: int | None, out: list[Action]
    ) -> None:
        """One more failure: back off, or park after too many within the window."""
        window = self.policy.reset_after_sec
        p.failures = [t for t in p.failures if now - t < window] + [now]
        if startup_code is None:
            p.startup_exits.clear()
        else:
            p.startup_exits = [*p.startup_exits, startup_code][-len(p.failures) :]
        n = len(p.failures)
        if p.probation or (self.policy.give_up_after and n >= self.policy.give_up_after):
            p.phase = Phase.FAILED
            p.backoff_until = None
            p.restart_pending = False
            if p.probation:
                said = f": {p.last_words}" if p.last_words else " (see its log)"
                p.reason = f"{p.last_exit} again, when tried after being parked{said}"
            else:
                p.reason = self._park_reason(p, n, now - p.failures[0])
            p.probation = False
            note = p.reason
            if self.policy.retry_parked_sec > 0:
                # A network outage parks a whole fleet in seconds: try again by itself,
                # slowly, for as long as it takes (an operator's start does it at once).
                p.parkings += 1
                delay = self.policy.parked_retry_delay(p.parkings)
                p.retry_at = now + delay
                note = f"{p.reason}; trying again by itself in {_seconds(delay)}"
            out.append(Note(p.spec.name, NoteKind.PARKED, note))
            out.append(Hold(p.spec.name, parked=True))
            return
        delay = self.policy.backoff(n)
        p.restart_pending = True
        p.phase = Phase.BACKOFF
        p.backoff_until = now + delay
        p.reason = f"{p.last_exit}; restarting in {_seconds(delay)} (failure {n})"
        out.append(Note(p.spec.name, NoteKind.BACKOFF, p.reason))

    def _park_reason(self, p: Proc, n: int, span: float) -> str:
        within = f"{n} times within {_seconds(span)}"
        # Its own last line says why (a DNS failure, a missing module, a bad token);
        # without one, where to look, and a guess only where the guess may be true.
        said = f": {p.last_words}" if p.last_words else " (see its log)"
        codes = set(p.startup_exits)
        if len(p.startup_exits) >= n and len(codes) == 1:
            (code,) = codes
            if code == 1 and not p.last_words and p.spec.is_hub:
                # The hub exits 1 for more than a token: its socket path taken by
                # something that is not a socket, its DB or config unreadable.
                return (
                    f"exited 1 {within} at start-up; its socket path, DB, config or token? "
                    "(see its log)"
                )
            if code == 1 and not p.last_words and p.token_state not in ("valid", "expiring"):
                return f"exited 1 {within} at start-up; token revoked? (see its log)"
            if code is not None and code >= 0:
                return f"exited {code} {within} at start-up{said}"
        last = p.last_exit if not p.last_words else f"{p.last_exit}, {p.last_words}"
        return f"failed {within} (last: {last}); start it again once fixed"

    def _on_tick(self, now: float, out: list[Action]) -> None:
        for p in self.procs.values():
            if p.stop_deadline is not None and now >= p.stop_deadline and p.alive and not p.killed:
                # The stop timeout ran out: KillMode=mixed, SIGKILL to the whole group.
                assert p.pid is not None
                p.killed = True
                p.stop_deadline = None
                out.append(
                    Note(
                        p.spec.name,
                        NoteKind.KILL,
                        f"did not stop within "
                        f"{_seconds(self.policy.stop_timeout_sec)}; sending SIGKILL",
                    )
                )
                out.append(Kill(p.spec.name, p.pid, _signal.SIGKILL, group=True))
            if p.start_deadline is not None and now >= p.start_deadline and p.alive:
                p.start_deadline = None
                p.fault = f"not ready within {_seconds(p.spec.start_timeout_sec)}"
                out.append(Note(p.spec.name, NoteKind.START_TIMEOUT, p.fault))
                self._begin_stop(p, now, "fault", out)
            if p.watchdog_deadline is not None and now >= p.watchdog_deadline and p.alive:
                # A hung process will not handle SIGTERM: kill it outright.
                assert p.pid is not None
                p.watchdog_deadline = None
                p.start_deadline = None
                if p.spec.liveness_file:
                    # No write for that long (the supervisor's own stalls excepted, see
                    # _after_stall): a hung bot, handled as a watchdog timeout.
                    silent = _duration(p.spec.watchdog_sec)
                    p.fault = f"{HUNG_FAULT}: {p.spec.liveness_file} silent for {silent}"
                else:
                    what = p.spec.liveness or "WATCHDOG=1"
                    p.fault = f"{WATCHDOG_FAULT}: no {what} for {_seconds(p.spec.watchdog_sec)}"
                p.phase = Phase.STOPPING
                p.stop_cause = "fault"
                p.killed = True
                out.append(Note(p.spec.name, NoteKind.WATCHDOG, p.fault))
                out.append(Kill(p.spec.name, p.pid, _signal.SIGKILL, group=True))
            if p.backoff_until is not None and now >= p.backoff_until:
                p.backoff_until = None
                if p.phase is Phase.BACKOFF:
                    p.phase = Phase.STOPPED  # _reconcile starts it when it may
            if p.retry_at is not None and now >= p.retry_at:
                p.retry_at = None
                if p.phase is Phase.FAILED and p.want and not self.shutting_down:
                    # One try: a failure parks it again at once, for twice as long.
                    p.phase = Phase.STOPPED
                    p.probation = True
                    p.restart_pending = True
                    p.failures.clear()
                    p.startup_exits.clear()
                    out.append(
                        Note(p.spec.name, NoteKind.RESTARTING, "trying again after being parked")
                    )

    def _memory_sample(self, p: Proc, pid: int, rss: int, out: list[Action]) -> None:
        cap = p.spec.memory_max
        if cap is None or rss <= cap or p.pid != pid or p.phase is Phase.STOPPING:
            return
        # Like systemd's MemoryMax=: the OOM killer's SIGKILL, then a restart with
        # backoff (a leak that comes back each time ends parked, with this reason).
        p.fault = f"{MEMORY_FAULT}: {_mib(rss)} resident, over bot.memory_max ({_mib(cap)})"
        p.phase = Phase.STOPPING
        p.stop_cause = "fault"
        p.killed = True
        p.watchdog_deadline = p.start_deadline = None
        out.append(Note(p.spec.name, NoteKind.MEMORY, p.fault))
        out.append(Kill(p.spec.name, pid, _signal.SIGKILL, group=True))

    def _after_stall(self, seconds: float, now: float, out: list[Action]) -> None:
        watched = 0
        for p in self.procs.values():
            if not p.alive or p.phase is Phase.STOPPING:
                continue
            if p.watchdog_deadline is not None:
                # A full period of silence seen by a running supervisor, from now.
                p.watchdog_deadline = max(p.watchdog_deadline, now + p.spec.watchdog_sec)
                watched += 1
            if p.start_deadline is not None:
                # The time it was denied; its READY may have been lost meanwhile.
                p.start_deadline = max(p.start_deadline, now) + seconds
                watched += 1
        if watched:
            out.append(
                Note(
                    "supervisor",
                    NoteKind.STALLED,
                    f"was not running for {_seconds(seconds)} (paused or starved); "
                    "the start and watchdog deadlines of the processes count again from now",
                )
            )

    # -- commands ------------------------------------------------------------

    def _start_command(self, p: Proc, out: list[Action]) -> None:
        if p.removed or self.shutting_down:
            return
        if not p.want or p.phase in (Phase.FAILED, Phase.BACKOFF):
            out.append(Note(p.spec.name, NoteKind.COMMAND, "start requested"))
        p.want = True
        if p.phase in (Phase.FAILED, Phase.BACKOFF):
            # An operator's start is a fresh chance: forget the failures.
            p.phase = Phase.STOPPED
            p.backoff_until = None
            p.retry_at = None
            p.parkings = 0
            p.probation = False
            p.failures.clear()
            p.startup_exits.clear()
            p.reason = None

    def _stop_command(self, p: Proc, now: float, out: list[Action]) -> None:
        if p.want:
            out.append(Note(p.spec.name, NoteKind.COMMAND, "stop requested"))
        p.want = False
        p.reason = "stopped by an operator"
        p.restart_pending = False
        if p.phase in (Phase.BACKOFF, Phase.FAILED):
            p.phase = Phase.STOPPED
            p.backoff_until = None
            p.retry_at = None
            out.append(Hold(p.spec.name))
        if p.alive:
            self._begin_stop(p, now, "command", out)

    def _restart_command(self, p: Proc, now: float, out: list[Action], rollout: Rollout) -> None:
        if p.removed or self.shutting_down:
            return
        out.append(Note(p.spec.name, NoteKind.COMMAND, "restart requested"))
        self._start_command(p, out)
        if p.spec.is_hub:
            # The hub is one process the bots cannot do without: at once. Bots wait
            # for the new one (the hub gate) before their turns go on.
            if p.alive:
                self._begin_stop(p, now, "restart", out)
            return
        rollout.members.add(p.spec.name)
        if p.rollout is not None:
            # Waiting for its turn in an earlier restart: restarted once, in this one's.
            p.rollout.queue.remove(p.spec.name)
            p.rollout.total -= 1
            p.rollout = None
        if p.alive and p.phase in (Phase.STARTING, Phase.RUNNING):
            self._enqueue(rollout, p)
            return
        if p.alive:
            self._begin_stop(p, now, "restart", out)  # on its way out already
        # Down already (stopping, backing off, stopped): started at once, and its
        # turn is under way; the limit holds until it is over.
        rollout.turns.add(p.spec.name)
        rollout.total += 1

    def _begin_stop(self, p: Proc, now: float, cause: StopCause, out: list[Action]) -> None:
        assert p.pid is not None
        if p.phase is Phase.STOPPING and p.stop_cause is not None:
            # Already on its way out; a stricter cause wins (stop beats restart).
            if cause in ("command", "shutdown", "removed"):
                p.stop_cause = cause
            return
        p.phase = Phase.STOPPING
        p.stop_cause = cause
        p.start_deadline = None
        p.watchdog_deadline = None
        p.stop_deadline = now + self.policy.stop_timeout_sec
        out.append(Kill(p.spec.name, p.pid, _signal.SIGTERM))

    # -- reload ------------------------------------------------------------

    def _reload(
        self, specs: tuple[ProcessSpec, ...], policy: Policy, now: float, out: list[Action]
    ) -> None:
        self.policy = policy
        wanted = {s.name: s for s in specs}
        changed = Rollout(cause="restart")
        for name, p in list(self.procs.items()):
            if name not in wanted and not p.removed:
                p.removed = True
                p.want = False
                out.append(Note(name, NoteKind.REMOVED, "no longer in the config; stopping"))
                if p.alive:
                    self._begin_stop(p, now, "removed", out)
        for name, spec in wanted.items():
            p_old = self.procs.get(name)
            if p_old is None or (p_old.removed and not p_old.alive and not p_old.spawning):
                self.procs[name] = Proc(spec=spec)
                out.append(Note(name, NoteKind.ADDED, "added by reload"))
            elif p_old.removed:
                # Removed and re-added before it finished stopping: keep it, start afresh.
                p_old.removed = False
                p_old.want = True
                p_old.spec = spec
                if p_old.alive:
                    p_old.stop_cause = "restart"
            elif p_old.spec != spec:
                p_old.spec = spec
                if p_old.alive:
                    out.append(Note(name, NoteKind.CHANGED, "its command changed; restarting"))
                    if spec.is_hub or p_old.phase not in (Phase.STARTING, Phase.RUNNING):
                        self._begin_stop(p_old, now, "restart", out)
                    elif p_old.rollout is None:
                        # A new bot.command changes every bot: in turns, as restart all.
                        changed.members.add(name)
                        self._enqueue(changed, p_old)
        if changed.members:
            self.rollouts.append(changed)

    # -- reconcile: start what should run ---------------------------------

    def _bots(self) -> Iterable[Proc]:
        return (p for n, p in self.procs.items() if n != HUB)

    def _hub_gate(self) -> str | None:
        """Why bots must wait for the hub now, or None when they may start."""
        hub = self.procs.get(HUB)
        if hub is None or not hub.want or hub.removed or hub.blocked:
            return None
        if hub.phase is Phase.RUNNING or hub.phase is Phase.FAILED:
            return None  # ready, or parked: the bots must not wait for ever
        return "waiting for the hub to be ready"

    def _reconcile(self, now: float, out: list[Action]) -> None:
        if self.shutting_down:
            self._reconcile_shutdown(now, out)
            return
        self.login_free_at = None
        for name, p in list(self.procs.items()):
            if p.removed and not p.alive and not p.spawning:
                # (With a spawn in flight, wait for Spawned and see the process out first.)
                del self.procs[name]
                out.append(Release(name))
                continue
            if p.want and p.phase is Phase.STOPPED and not p.alive:
                self._maybe_spawn(p, now, out)
            elif not p.want and p.alive and p.stop_cause is None:
                # Spawned after a stop was asked for (a backend that starts
                # asynchronously), or announced STOPPING=1 itself: see it out.
                self._begin_stop(p, now, "removed" if p.removed else "command", out)
        if self.rollouts:
            self._roll(now, out)

    def _maybe_spawn(self, p: Proc, now: float, out: list[Action]) -> None:
        if p.blocked:
            p.reason = f"not started: {p.blocked}"
            return
        if not p.spec.is_hub:
            wait = self._hub_gate() or self._login_gate(now)
            if wait:
                p.reason = wait
                return
        p.phase = Phase.STARTING
        p.reason = None
        # Counted once it runs (Spawned): a start refused by fork or a held lock
        # is a failure with its own reason, not a restart.
        out.append(Spawn(p.spec, p.restarts + p.restart_pending))

    def _login_gate(self, now: float) -> str | None:
        """Why a bot must wait for a login slot now (and when one frees), or None; a
        bot that may start takes its slot. Every bot start counts: a first start, a
        restart after a crash, an operator's, a restart for a new hub."""
        free = self._free_logins(now)
        if free is None:
            return None
        if free <= 0:
            free_at = self.logins[0] + LOGIN_WINDOW_SEC
            self.login_free_at = (
                free_at if self.login_free_at is None else min(self.login_free_at, free_at)
            )
            return (
                f"waiting for a login slot (Twitch allows the bot account "
                f"{self.policy.logins_per_window} logins per {TWITCH_LOGIN_WINDOW_SEC:g} s)"
            )
        self.logins.append(now)
        return None

    def _reconcile_shutdown(self, now: float, out: list[Action]) -> None:
        bots_alive = False
        for p in self._bots():
            p.backoff_until = None
            if p.alive:
                bots_alive = True
                self._begin_stop(p, now, "shutdown", out)
            elif p.spawning:
                bots_alive = True  # stopped once its Spawned arrives; not finished before
            elif p.phase in (Phase.BACKOFF, Phase.FAILED):
                # Stopped for good, and no failed unit left behind. Once: this runs
                # after every event of the shutdown.
                p.phase = Phase.STOPPED
                out.append(Hold(p.spec.name))
        hub = self.procs.get(HUB)
        hub_alive = hub is not None and (hub.alive or hub.spawning)
        if hub is not None:
            hub.backoff_until = None
            if not hub.alive and hub.phase in (Phase.BACKOFF, Phase.FAILED):
                hub.phase = Phase.STOPPED
                out.append(Hold(HUB))
        if hub is not None and hub.alive and not bots_alive:
            self._begin_stop(hub, now, "shutdown", out)
        if not bots_alive and not hub_alive and not self.finished:
            self.finished = True
            out.append(Note("supervisor", NoteKind.FINISHED, "every process has stopped"))
            out.append(Finished())
