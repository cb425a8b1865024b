"""Unit names and the properties of the fleet's transient units. Pure: no I/O.

One unit per process: ``kissbot-hub.service`` and ``kissbot-bot@CHANNEL.service``,
all in ``kissbot.slice``. :func:`transient_properties` turns a
:class:`~kissbot_supervisor.core.ProcessSpec` into the ``a(sv)`` list that
``StartTransientUnit`` takes, with the exact D-Bus type systemd 252 reads for
each property (a property sent with another type fails the whole call).

Restart design: the supervisor alone restarts the units it runs (``Restart=no``,
no start limit: its backoff, login pacing and give-up decide). A unit whose
process failed stays ``failed``, loaded and listed by ``systemctl --failed``
and ``systemctl status`` with its ``Result``, while it backs off and once
parked; a stop the supervisor or an operator asked for clears it. Had systemd
restarted units by itself (``Restart=on-failure``, once the fallback for a
supervisor that is down), the park's ``StopUnit`` to cancel that restart left
the unit inactive, and systemd unloaded it: "Unit kissbot-bot@CH.service could
not be found". A supervisor that is down is restarted within seconds by its
own unit and adopts the fleet, restarting what failed meanwhile. Static units
(:mod:`.export`), which have no supervisor, keep systemd's restart
(:func:`restart_properties`).

Dependencies: bots are ``After=`` the hub, never ``Wants=`` (the supervisor
starts the hub itself, and a bot's start must not start a hub it has parked:
still loaded while running bots refer to it, it came back at every bot start,
and failed without its token file), never ``Requires=``/``BindsTo=`` (a hub
crash must not take the bots down) and never ``PartOf=`` the supervisor (the
bots outlive a supervisor crash). Stopping runs bots first, then the hub:
systemd stops in the reverse of ``After=``.

Hardening rules (``systemd.hardening``, on by default), decided from paths only:

* ``ProtectSystem=strict``: everything read-only but ``ReadWritePaths=`` (the
  workdir, then the DB's and the hub socket's directories and any extra path,
  each with ``-`` so that a missing one is skipped, not fatal).
* ``ProtectHome=read-only``, always. ``yes`` hides /home, /root and /run/user
  entirely, so a ``ReadWritePaths=`` entry below them has no mount point to make
  writable and a venv whose python links into a home dir (pyenv) cannot exec;
  ``tmpfs`` hides the workdir unless it is bind-mounted. ``read-only`` plus the
  workdir in ``ReadWritePaths=`` keeps a workdir under /home usable.
* ``PrivateTmp=yes`` only when no path the unit uses (workdir, read-write
  paths, absolute paths in argv, the executable) is under /tmp or /var/tmp: a
  private /tmp would hide the default hub socket ``/tmp/kissbot_hub.sock`` from
  the bots (each unit gets its own) and hide a workdir or venv kept there.
* ``ProcSubset=pid``: psutil's per-process calls (what KissBot's system monitor
  uses) work; system-wide ones (``virtual_memory()``, ``cpu_percent()``,
  ``boot_time()``) raise FileNotFoundError (checked in a pid namespace with
  ``subset=pid``). Turn hardening off for a bot that needs them.
* ``MemoryDenyWriteExecute=yes``: CPython 3.11 has no JIT; ctypes callbacks,
  ssl, asyncio, sqlite3 and cryptography ran under the kernel's equivalent
  (``PR_SET_MDWE``).
* No capabilities (``CapabilityBoundingSet=`` empty): a unit without ``User=``
  runs as a root that cannot read files it does not own (no CAP_DAC_OVERRIDE);
  set ``systemd.user`` to the workdir's owner when that is not root.
"""

from __future__ import annotations

import errno
import math
import os
import posixpath

from ...core import HUB, Policy, ProcessSpec
from ...core.records import field, record
from ...kissbot.names import DEFAULT_SLICE, HUB_UNIT, SERVICE_SUFFIX, unit_of

# Neither typing nor dataclasses at run time: the resident daemon loads this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ...config.load import Config

    Which = Callable[[str], str | None]

USEC_INFINITY = 2**64 - 1
PROGRESSIVE_RESTART_VERSION = 254  # first systemd with RestartSteps= and RestartMaxDelaySec=
START_LIMIT_MARGIN = 5  # the first start + 4 operator commands (see start_limit_burst)
TMP_DIRS = ("/tmp", "/var/tmp")
ADDRESS_FAMILIES = ("AF_UNIX", "AF_INET", "AF_INET6")

# One entry of StartTransientUnit's a(sv): (name, (signature, value)). A builtin generic
# alias: no typing import needed.
Property = tuple[str, tuple[str, object]]


class UnitError(ValueError):
    """A unit cannot be described; ``what`` is the offending value, ``rule`` the rule."""

    def __init__(self, what: str, rule: str) -> None:
        super().__init__(f"{what!r} {rule}")
        self.what = what
        self.rule = rule


class ExecutableNotFound(UnitError):
    def __init__(self, program: str, where: str) -> None:
        super().__init__(program, f"is not an executable file ({where})")
        self.program = program


# --- options ---------------------------------------------------------------------------


@record
class UnitOptions:
    """Everything about the units that is not in a ProcessSpec.

    Readiness and the watchdog come from the spec (``ready``, ``watchdog_sec``),
    the restart pacing and stop timeout from ``policy``. ``credential_path`` is
    per unit: give each unit its own copy with :func:`..records.replace`.
    """

    workdir: str
    policy: Policy = field(factory=Policy)
    manager_version: int = 252
    hub_enabled: bool = False
    user: str | None = None
    group: str | None = None
    slice: str = DEFAULT_SLICE
    hardening: bool = True
    read_write_paths: tuple[str, ...] = ()  # besides the workdir, e.g. the hub socket's dir
    credential_path: str | None = None  # a 0600 file handed over as credential "token"
    memory_max: int | None = None  # for the slice
    tasks_max: int | None = None  # for the slice


def options_from_config(
    cfg: Config, policy: Policy, manager_version: int, credential_path: str | None = None
) -> UnitOptions:
    """UnitOptions from the config; read-write paths: DB dir, hub socket dir, extra paths."""
    s = cfg.settings
    workdir = str(cfg.workdir)
    extra: list[str] = []
    candidates = []
    if s.use_db or s.hub_enabled:  # KissBot writes the DB (WAL: next to the file) in both cases
        candidates.append(posixpath.dirname(str(cfg.resolve(s.db))))
    if s.hub_enabled:
        candidates.append(posixpath.dirname(str(cfg.resolve(s.hub_socket))))
    candidates += s.systemd_read_write_paths
    for candidate in candidates:
        path = posixpath.normpath(candidate)
        if not _under(path, (workdir,)) and path not in extra:
            extra.append(path)
    return UnitOptions(
        workdir=workdir,
        policy=policy,
        manager_version=manager_version,
        hub_enabled=s.hub_enabled,
        user=s.systemd_user,
        group=s.systemd_group,
        slice=s.systemd_slice,
        hardening=s.systemd_hardening,
        read_write_paths=tuple(extra),
        credential_path=credential_path,
        memory_max=s.systemd_memory_max,
        tasks_max=s.systemd_tasks_max,
    )


# --- properties ----------------------------------------------------------------------


def usec(seconds: float) -> int:
    return round(seconds * 1_000_000)


def start_limit_burst(policy: Policy, is_hub: bool) -> int:
    """Starts allowed per ``reset_after_sec`` before systemd refuses (start-limit-hit).

    The supervisor parks a unit at its ``give_up_after``-th failure within
    ``reset_after_sec``, so in any such window it starts a unit at most
    ``give_up_after`` times after failures plus the start before them; a bot is
    also restarted each time a restarted hub is ready again, at most
    ``give_up_after`` times per window before the hub is parked in turn. The
    margin covers that first start and four operator start/restart commands.
    systemd's window is fixed (it opens at the first start counted), so it never
    holds more failures than the supervisor's sliding one. After a park the
    backend must ``ResetFailedUnit`` before the next operator start: that also
    resets systemd's counter. The hub: ``give_up_after + 5``; a bot:
    ``2 * give_up_after + 5``.
    """
    hub_restarts = 0 if is_hub else policy.give_up_after
    return policy.give_up_after + hub_restarts + START_LIMIT_MARGIN


# Only the supervisor restarts its transient units (see the module docstring).
SUPERVISED_RESTART: tuple[Property, ...] = (
    ("Restart", ("s", "no")),
    ("StartLimitIntervalUSec", ("t", 0)),
)


def restart_properties(policy: Policy, manager_version: int, is_hub: bool) -> list[Property]:
    """Restart=, its pacing and the start limit of a static unit, which systemd alone
    restarts (:mod:`.export`); a pure function of the version number."""
    restart = "always" if policy.restart_always else "on-failure"
    props: list[Property] = [("Restart", ("s", restart))]
    progressive = (
        manager_version >= PROGRESSIVE_RESTART_VERSION
        and 0 < policy.delay_sec < policy.max_delay_sec
    )
    if progressive:
        # systemd waits delay * (max/delay)^(i/steps) before restart i+1. With steps =
        # floor(log2(max/delay)) each step at least doubles: systemd's schedule is never
        # earlier than the supervisor's backoff (delay * 2^i, capped), which stays in charge.
        steps = max(1, math.floor(math.log2(policy.max_delay_sec / policy.delay_sec)))
        props += [
            ("RestartUSec", ("t", usec(policy.delay_sec))),
            ("RestartSteps", ("u", steps)),
            ("RestartMaxDelayUSec", ("t", usec(policy.max_delay_sec))),
        ]
    else:
        props.append(("RestartUSec", ("t", usec(policy.max_delay_sec))))
    if policy.give_up_after == 0 or policy.reset_after_sec <= 0:
        # The supervisor never gives up: neither may systemd (an interval of 0 disables it).
        interval = 0
    else:
        interval = usec(policy.reset_after_sec)
    props += [
        ("StartLimitIntervalUSec", ("t", interval)),
        ("StartLimitBurst", ("u", start_limit_burst(policy, is_hub))),
    ]
    return props


def resolve_executable(program: str, workdir: str, which: Which) -> str:
    """argv[0] as an absolute path: a relative path is taken from the workdir, a bare name
    from PATH (systemd wants an absolute path and must not guess)."""
    if "/" in program:
        candidate = posixpath.normpath(posixpath.join(workdir, program))
        found = which(candidate)
        where = "relative to the workdir" if not program.startswith("/") else "absolute path"
    else:
        found = which(program)
        where = "searched in PATH"
    if found is None:
        raise ExecutableNotFound(program, where)
    if not found.startswith("/"):
        raise ExecutableNotFound(program, f"found as {found!r} through a relative PATH entry")
    return posixpath.normpath(found)


def _under(path: str, roots: Iterable[str]) -> bool:
    path = posixpath.normpath(path)
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _paths_used(spec: ProcessSpec, opts: UnitOptions, exec_path: str) -> list[str]:
    argv_paths = [a for a in spec.argv if a.startswith("/")]
    return [opts.workdir, *opts.read_write_paths, exec_path, *argv_paths]


def hardening_properties(paths_used: list[str], opts: UnitOptions) -> list[Property]:
    """The sandbox (see the module docstring for the rules)."""
    rw = [opts.workdir, *("-" + p for p in opts.read_write_paths)]
    props: list[Property] = [
        ("NoNewPrivileges", ("b", True)),
        ("ProtectSystem", ("s", "strict")),
        ("ReadWritePaths", ("as", rw)),
        ("ProtectHome", ("s", "read-only")),
    ]
    if not any(_under(p, TMP_DIRS) for p in paths_used):
        props.append(("PrivateTmp", ("b", True)))
    props += [
        (name, ("b", True))
        for name in (
            "PrivateDevices",
            "ProtectKernelTunables",
            "ProtectKernelModules",
            "ProtectKernelLogs",
            "ProtectControlGroups",
            "ProtectClock",
            "ProtectHostname",
            "RestrictRealtime",
            "RestrictSUIDSGID",
            "LockPersonality",
            "MemoryDenyWriteExecute",
        )
    ]
    props += [
        ("RestrictNamespaces", ("t", 0)),  # the set of namespaces allowed: none
        ("RestrictAddressFamilies", ("(bas)", (True, list(ADDRESS_FAMILIES)))),  # allow-list
        ("SystemCallArchitectures", ("as", ["native"])),
        ("SystemCallFilter", ("(bas)", (True, ["@system-service"]))),
        # A chat bot needs neither chown/setuid & co. nor priority/affinity/mlock calls.
        ("SystemCallFilter", ("(bas)", (False, ["@privileged", "@resources"]))),
        ("SystemCallErrorNumber", ("i", errno.EPERM)),  # refuse, don't SIGSYS-kill
        ("CapabilityBoundingSet", ("t", 0)),
        ("UMask", ("u", 0o077)),  # the hub and the bots share one user; nobody else reads
        ("ProtectProc", ("s", "invisible")),
        ("ProcSubset", ("s", "pid")),
        ("DevicePolicy", ("s", "closed")),
    ]
    return props


def describe(name: str) -> str:
    return "KissBot EventSub hub" if name == HUB else f"KissBot bot for #{name}"


def journal_fields(name: str) -> list[bytes]:
    if name == HUB:
        return [b"KISSBOT_PROCESS=hub"]
    return [b"KISSBOT_PROCESS=bot", f"KISSBOT_CHANNEL={name}".encode()]


def find_program(program: str) -> str | None:
    """``shutil.which`` for the resident daemon: importing shutil brings bz2 and lzma
    along, 0.3 MiB kept for as long as the supervisor runs."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", program)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def transient_properties(
    spec: ProcessSpec, opts: UnitOptions, which: Which | None = None, *, supervised: bool = True
) -> list[Property]:
    """The ``a(sv)`` properties of the unit for ``spec``, ready for StartTransientUnit.

    Raises :class:`UnitError` for a bad channel name, :class:`ExecutableNotFound`
    when argv[0] cannot be resolved. Secrets never go in here: the token file is
    passed by path (``LoadCredential=``), never ``Environment=``/``SetCredential=``.
    ``which`` finds argv[0] (default: :func:`find_program`, in the supervisor's PATH).
    ``supervised``: restarted by the supervisor only; False for a static unit.
    """
    if which is None:
        which = find_program
    unit = unit_of(spec.name)
    if not opts.workdir.startswith("/"):
        raise UnitError(opts.workdir, "is not an absolute path (the workdir)")
    exec_path = resolve_executable(spec.argv[0], opts.workdir, which)
    notify = spec.ready == "notify"
    props: list[Property] = [
        ("Description", ("s", describe(spec.name))),
        ("ExecStart", ("a(sasb)", [(exec_path, list(spec.argv), False)])),
        ("WorkingDirectory", ("s", opts.workdir)),
        # exec, not simple: a missing interpreter fails the start job instead of the unit later.
        ("Type", ("s", "notify" if notify else "exec")),
    ]
    # A liveness check (spec.liveness) is the supervisor's: the core keeps its deadline.
    watchdog = spec.watchdog_sec > 0 and not spec.liveness
    if notify or watchdog:
        # Type=notify only waits for READY=1 when the process promised it (ready: notify); a
        # watchdog alone only needs the notify socket for WATCHDOG=1.
        props.append(("NotifyAccess", ("s", "main")))
    if watchdog:
        props.append(("WatchdogUSec", ("t", usec(spec.watchdog_sec))))
    start_timeout = usec(spec.start_timeout_sec) if spec.start_timeout_sec > 0 else USEC_INFINITY
    props += [
        ("TimeoutStartUSec", ("t", start_timeout)),
        ("TimeoutStopUSec", ("t", usec(opts.policy.stop_timeout_sec))),
        ("KillMode", ("s", "mixed")),  # SIGTERM to the main process, SIGKILL to all at timeout
        *(
            SUPERVISED_RESTART
            if supervised
            else restart_properties(opts.policy, opts.manager_version, spec.name == HUB)
        ),
        ("SyslogIdentifier", ("s", unit.removesuffix(SERVICE_SUFFIX))),
        ("LogExtraFields", ("aay", journal_fields(spec.name))),
        ("Slice", ("s", opts.slice)),
        ("MemoryAccounting", ("b", True)),
        ("OOMScoreAdjust", ("i", spec.oom_score_adjust)),
    ]
    if spec.memory_max is not None:
        props.append(("MemoryMax", ("t", spec.memory_max)))
    if spec.name != HUB and opts.hub_enabled:
        props.append(("After", ("as", [HUB_UNIT])))
    if opts.user:
        props.append(("User", ("s", opts.user)))
    if opts.group:
        props.append(("Group", ("s", opts.group)))
    if opts.credential_path is not None:
        if not opts.credential_path.startswith("/"):
            raise UnitError(opts.credential_path, "is not an absolute path (credential file)")
        props.append(("LoadCredential", ("a(ss)", [("token", opts.credential_path)])))
    if opts.hardening:
        props += hardening_properties(_paths_used(spec, opts, exec_path), opts)
    return props


def slice_properties(opts: UnitOptions) -> list[Property]:
    """Properties of a transient ``kissbot.slice``, for when no unit file is installed."""
    props: list[Property] = [("Description", ("s", "KissBot fleet (hub and bots)"))]
    props.append(("MemoryAccounting", ("b", True)))
    if opts.memory_max is not None:
        props.append(("MemoryMax", ("t", opts.memory_max)))
    if opts.tasks_max is not None:
        props.append(("TasksAccounting", ("b", True)))
        props.append(("TasksMax", ("t", opts.tasks_max)))
    return props
