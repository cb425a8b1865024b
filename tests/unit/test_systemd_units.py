"""Unit names, transient-unit properties, static export and the systemd settings (no bus)."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from jeepney.low_level import Message

from kissbot_supervisor.backends.systemd import export
from kissbot_supervisor.backends.systemd import messages as manager
from kissbot_supervisor.backends.systemd.units import (
    USEC_INFINITY,
    ExecutableNotFound,
    Property,
    UnitError,
    UnitOptions,
    slice_properties,
    start_limit_burst,
    transient_properties,
)
from kissbot_supervisor.config.load import ConfigError, read_settings
from kissbot_supervisor.core import HUB, Policy, ProcessSpec
from kissbot_supervisor.core.records import replace
from kissbot_supervisor.kissbot.names import HUB_UNIT, bot_unit, name_of_unit

# The D-Bus type of every property we may send, as systemd 252's own client sends it
# (captured from `systemd-run -p KEY=VALUE ...` of systemd 252.39 against a recording
# bus endpoint). A property with another type fails the whole StartTransientUnit call.
SYSTEMD_252_TYPES = {
    "Description": "s",
    "Type": "s",
    "NotifyAccess": "s",
    "WatchdogUSec": "t",
    "Restart": "s",
    "RestartUSec": "t",
    "StartLimitBurst": "u",
    "StartLimitIntervalUSec": "t",
    "KillMode": "s",
    "TimeoutStopUSec": "t",
    "TimeoutStartUSec": "t",
    "SyslogIdentifier": "s",
    "LogExtraFields": "aay",
    "Slice": "s",
    "After": "as",
    "Wants": "as",
    "User": "s",
    "Group": "s",
    "LoadCredential": "a(ss)",
    "NoNewPrivileges": "b",
    "ProtectSystem": "s",
    "ReadWritePaths": "as",
    "ProtectHome": "s",
    "PrivateTmp": "b",
    "PrivateDevices": "b",
    "ProtectKernelTunables": "b",
    "ProtectKernelModules": "b",
    "ProtectKernelLogs": "b",
    "ProtectControlGroups": "b",
    "ProtectClock": "b",
    "ProtectHostname": "b",
    "RestrictNamespaces": "t",
    "RestrictRealtime": "b",
    "RestrictSUIDSGID": "b",
    "LockPersonality": "b",
    "MemoryDenyWriteExecute": "b",
    "RestrictAddressFamilies": "(bas)",
    "SystemCallArchitectures": "as",
    "SystemCallFilter": "(bas)",
    "SystemCallErrorNumber": "i",
    "CapabilityBoundingSet": "t",
    "UMask": "u",
    "ProtectProc": "s",
    "ProcSubset": "s",
    "DevicePolicy": "s",
    "MemoryAccounting": "b",
    "OOMScoreAdjust": "i",
    "TasksAccounting": "b",
    "MemoryMax": "t",
    "TasksMax": "t",
    "WorkingDirectory": "s",
    "ExecStart": "a(sasb)",
}
# systemd >= 254 only (systemd 252's systemd-run: "Unknown assignment: RestartSteps=5").
SYSTEMD_254_TYPES = {"RestartSteps": "u", "RestartMaxDelayUSec": "t"}

if TYPE_CHECKING:
    from kissbot_supervisor.core import ReadyMode

WORKDIR = "/opt/kissbot"
PY = "/opt/kissbot/kissbot-venv/bin/python"
Which = Callable[[str], str | None]


def which_with(*executables: str) -> Which:
    """A fake shutil.which: these absolute paths exist, and python3 is /usr/bin/python3."""
    known = {PY, "/usr/bin/python3", *executables}

    def which(program: str) -> str | None:
        if program in known:
            return program
        return {"python3": "/usr/bin/python3"}.get(program)

    return which


which = which_with()


def bot(channel: str = "el_serda", ready: ReadyMode = "file", watchdog: float = 0.0) -> ProcessSpec:
    argv = (PY, "main.py", "--channel", channel, "--config", "config/config.yaml")
    hub = ("--eventsub", "hub", "--hub-socket", "/tmp/kissbot_hub.sock")
    return ProcessSpec(channel, (*argv, *hub), ready, watchdog, 120.0)


HUB_SPEC = ProcessSpec(
    HUB, (PY, "eventsub_hub.py", "--socket", "/tmp/kissbot_hub.sock"), "socket", 0.0, 30.0
)


def opts(**changes: Any) -> UnitOptions:
    base = UnitOptions(workdir=WORKDIR, hub_enabled=True, read_write_paths=("/tmp",))
    return replace(base, **changes)


def props_of(
    spec: ProcessSpec, options: UnitOptions, which: Which = which, *, supervised: bool = True
) -> dict[str, tuple[str, object]]:
    props = transient_properties(spec, options, which=which, supervised=supervised)
    # Only SystemCallFilter is assigned twice on purpose (an allow list, then a deny list).
    names = [name for name, _ in props if name != "SystemCallFilter"]
    assert len(names) == len(set(names)), f"a property is sent twice: {names}"
    first: dict[str, tuple[str, object]] = {}
    for name, typed in props:
        first.setdefault(name, typed)
    return first


def value(props: dict[str, tuple[str, object]], name: str) -> object:
    return props[name][1]


# --- a value against its D-Bus signature -----------------------------------------------


def split_signature(sig: str) -> list[str]:
    """Complete types of a signature: "sa(sv)b" -> ["s", "a(sv)", "b"]."""
    out, i = [], 0
    while i < len(sig):
        j = i
        while sig[j] == "a":
            j += 1
        if sig[j] in "({":
            depth, k = 0, j
            while True:
                depth += {"(": 1, "{": 1, ")": -1, "}": -1}.get(sig[k], 0)
                if depth == 0:
                    break
                k += 1
            j = k
        out.append(sig[i : j + 1])
        i = j + 1
    return out


def fits(sig: str, v: object) -> bool:
    """Does Python value ``v`` have the shape jeepney serialises for ``sig``?"""
    ranges = {"y": (0, 2**8), "u": (0, 2**32), "t": (0, 2**64), "i": (-(2**31), 2**31)}
    if sig in ranges:
        low, high = ranges[sig]
        return isinstance(v, int) and not isinstance(v, bool) and low <= v < high
    if sig == "b":
        return isinstance(v, bool)
    if sig in ("s", "o", "g"):
        return isinstance(v, str) and "\0" not in v
    if sig == "ay":
        return isinstance(v, bytes)
    if sig.startswith("a{"):
        key, val = split_signature(sig[2:-1])
        return isinstance(v, dict) and all(fits(key, k) and fits(val, x) for k, x in v.items())
    if sig.startswith("a"):
        return isinstance(v, list) and all(fits(sig[1:], x) for x in v)
    if sig.startswith("("):
        parts = split_signature(sig[1:-1])
        return (
            isinstance(v, tuple)
            and len(v) == len(parts)
            and all(fits(p, x) for p, x in zip(parts, v, strict=True))
        )
    if sig == "v":
        return isinstance(v, tuple) and len(v) == 2 and fits(v[0], v[1])
    raise AssertionError(f"signature {sig!r} not handled")


def check_types(props: list[Property], version: int = 252) -> None:
    allowed = dict(SYSTEMD_252_TYPES)
    if version >= 254:
        allowed |= SYSTEMD_254_TYPES
    for name, variant in props:
        sig, v = variant
        assert allowed.get(name) == sig, (
            f"{name}: {sig!r}, systemd {version} wants {allowed.get(name)!r}"
        )
        assert fits(sig, v), f"{name}: {v!r} does not fit {sig!r}"
    message = manager.start_transient_unit("kissbot-bot@el_serda.service", props)
    wire = message.serialise(serial=7)
    back = Message.from_buffer(wire)
    assert back.body[2] == props  # the same values after a trip through the wire format


# --- names ----------------------------------------------------------------------------


def test_unit_names() -> None:
    assert HUB_UNIT == "kissbot-hub.service"
    assert bot_unit("el_serda") == "kissbot-bot@el_serda.service"


@pytest.mark.parametrize(
    "channel",
    ["El_Serda", "abc", "a" * 26, "el-serda", "../etc", "el serda", "el@x", "ｅl_serda", ""],
)
def test_bot_unit_checks_the_login_rule_again(channel: str) -> None:
    with pytest.raises(ValueError, match="not a Twitch login"):
        bot_unit(channel)


@pytest.mark.parametrize("channel", ["el_serda", "morthal_", "pelerin_42", "abcd", "z" * 25])
def test_name_of_unit_round_trip(channel: str) -> None:
    assert name_of_unit(bot_unit(channel)) == channel
    assert name_of_unit(HUB_UNIT) == HUB


@pytest.mark.parametrize(
    "unit",
    [
        "run-credentials-kissbot\\x2dbot\\x40el_serda.service.mount",
        "kissbot-bot@.service",
        "kissbot-bot@El_Serda.service",
        "kissbot-bot@el_serda.service.mount",
        "kissbot-bot@el_serda.socket",
        "kissbot-bot@abc.service",
        "kissbot-hub@x.service",
        "kissbot.slice",
        "kissbot-supervisor.service",
        "ssh.service",
    ],
)
def test_name_of_unit_rejects_foreign_units(unit: str) -> None:
    assert name_of_unit(unit) is None


# --- properties -------------------------------------------------------------------------


def test_plain_bot() -> None:
    props = props_of(bot(), opts(hardening=False))
    assert value(props, "Description") == "KissBot bot for #el_serda"
    assert value(props, "ExecStart") == [(PY, list(bot().argv), False)]
    assert value(props, "WorkingDirectory") == WORKDIR
    assert value(props, "Type") == "exec"
    assert "NotifyAccess" not in props
    assert "WatchdogUSec" not in props
    assert value(props, "TimeoutStartUSec") == 120_000_000
    assert value(props, "TimeoutStopUSec") == 10_000_000
    assert value(props, "KillMode") == "mixed"
    assert value(props, "Restart") == "no"  # the supervisor's backoff alone restarts it
    assert value(props, "StartLimitIntervalUSec") == 0
    assert value(props, "SyslogIdentifier") == "kissbot-bot@el_serda"
    assert value(props, "LogExtraFields") == [b"KISSBOT_PROCESS=bot", b"KISSBOT_CHANNEL=el_serda"]
    assert value(props, "Slice") == "kissbot.slice"
    assert value(props, "After") == ["kissbot-hub.service"]
    for absent in (
        "Wants",  # a bot's start must not start a parked hub
        "Requires",
        "BindsTo",
        "PartOf",
        "User",
        "Group",
        "LoadCredential",
        "Environment",
        "SetCredential",
        "AddRef",
        "RestartSteps",
        "RestartUSec",
        "StartLimitBurst",
        "ProtectSystem",
    ):
        assert absent not in props, absent
    check_types(transient_properties(bot(), opts(hardening=False), which=which))


def test_hub_has_no_dependencies_and_its_own_journal_field() -> None:
    props = props_of(HUB_SPEC, opts())
    assert value(props, "Description") == "KissBot EventSub hub"
    assert value(props, "SyslogIdentifier") == "kissbot-hub"
    assert value(props, "LogExtraFields") == [b"KISSBOT_PROCESS=hub"]
    assert "After" not in props
    assert "Wants" not in props
    check_types(transient_properties(HUB_SPEC, opts(), which=which))


def test_bots_without_a_hub_do_not_want_one() -> None:
    props = props_of(bot(), opts(hub_enabled=False))
    assert "After" not in props
    assert "Wants" not in props


def test_notify_bot_with_watchdog() -> None:
    props = props_of(bot(ready="notify", watchdog=30), opts())
    assert value(props, "Type") == "notify"
    assert value(props, "NotifyAccess") == "main"
    assert value(props, "WatchdogUSec") == 30_000_000


def test_watchdog_alone_keeps_type_exec_but_opens_the_notify_socket() -> None:
    # Type=notify would wait for a READY=1 that a file-ready bot never sends.
    props = props_of(bot(ready="file", watchdog=12.5), opts())
    assert value(props, "Type") == "exec"
    assert value(props, "NotifyAccess") == "main"
    assert value(props, "WatchdogUSec") == 12_500_000


def test_a_hub_under_the_supervisors_liveness_check_gets_no_unit_watchdog() -> None:
    # The pings come from the supervisor's check (hub.liveness_sec), which systemd
    # never sees: a WatchdogSec= would kill a healthy hub.
    spec = replace(HUB_SPEC, watchdog_sec=90.0, liveness="pong to hello + ping")
    props = props_of(spec, opts())
    assert "WatchdogUSec" not in props
    assert "NotifyAccess" not in props
    assert value(props, "Type") == "exec"


def test_a_bot_under_system_log_liveness_gets_no_unit_watchdog() -> None:
    # bot.liveness: system-log: the supervisor sees the writes and kills a silent bot
    # itself (KillUnit); systemd would kill a healthy bot that never sends WATCHDOG=1.
    spec = replace(
        bot(),
        watchdog_sec=300.0,
        liveness="write to logs/broadcast/x/system.log",
        liveness_file="logs/broadcast/x/system.log",
    )
    props = props_of(spec, opts())
    assert "WatchdogUSec" not in props
    assert "NotifyAccess" not in props


def test_no_start_timeout_is_infinity() -> None:
    spec = replace(bot(), start_timeout_sec=0.0)
    assert value(props_of(spec, opts()), "TimeoutStartUSec") == USEC_INFINITY


def test_user_group_and_credential(tmp_path: Path) -> None:
    secret = "oauth:s3cr3t-t0ken"
    cred = tmp_path / "token"
    cred.write_text(secret)
    props = transient_properties(
        bot(), opts(user="kissbot", group="kissbot", credential_path=str(cred)), which=which
    )
    d = dict(props)
    assert value(d, "User") == value(d, "Group") == "kissbot"
    assert value(d, "LoadCredential") == [("token", str(cred))]
    assert "Environment" not in d
    assert "SetCredential" not in d
    assert secret not in repr(props)
    check_types(props)


def test_relative_credential_path_is_refused() -> None:
    with pytest.raises(UnitError, match="credential"):
        transient_properties(bot(), opts(credential_path="token"), which=which)


def test_exec_start_resolves_argv0() -> None:
    spec = replace(bot(), argv=("python3", "main.py"))
    assert value(props_of(spec, opts()), "ExecStart") == [
        ("/usr/bin/python3", ["python3", "main.py"], False)
    ]
    spec = replace(bot(), argv=("kissbot-venv/bin/python", "main.py"))
    assert value(props_of(spec, opts()), "ExecStart") == [
        (PY, ["kissbot-venv/bin/python", "main.py"], False)
    ]


@pytest.mark.parametrize("program", ["python9", "/usr/bin/nope", "venv/bin/python"])
def test_exec_start_not_found(program: str) -> None:
    spec = replace(bot(), argv=(program, "main.py"))
    with pytest.raises(ExecutableNotFound) as info:
        transient_properties(spec, opts(), which=which)
    assert info.value.program == program


def test_hardened_bot_types_and_values() -> None:
    props = transient_properties(bot(ready="notify", watchdog=30), opts(), which=which)
    check_types(props)
    d = dict(props)
    assert value(d, "ProtectSystem") == "strict"
    assert value(d, "ReadWritePaths") == [WORKDIR, "-/tmp"]
    assert value(d, "ProtectHome") == "read-only"
    assert value(d, "RestrictAddressFamilies") == (True, ["AF_UNIX", "AF_INET", "AF_INET6"])
    filters = [typed[1] for name, typed in props if name == "SystemCallFilter"]
    assert filters == [(True, ["@system-service"]), (False, ["@privileged", "@resources"])]
    assert value(d, "SystemCallArchitectures") == ["native"]
    assert value(d, "CapabilityBoundingSet") == 0
    assert value(d, "RestrictNamespaces") == 0
    assert value(d, "UMask") == 0o077
    assert (value(d, "ProtectProc"), value(d, "ProcSubset")) == ("invisible", "pid")
    assert value(d, "DevicePolicy") == "closed"
    for flag in (
        "NoNewPrivileges",
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
    ):
        assert value(d, flag) is True, flag
    assert "IPAddressDeny" not in d  # the bots need the network


def test_private_tmp_only_when_nothing_lives_in_tmp() -> None:
    # The default hub socket is in /tmp: a private /tmp per unit would hide it from the bots.
    assert "PrivateTmp" not in props_of(bot(), opts())
    elsewhere = replace(
        bot(), argv=(PY, "main.py", "--channel", "el_serda", "--hub-socket", "/run/kb/hub.sock")
    )
    o = opts(read_write_paths=("/run/kb",))
    assert value(props_of(elsewhere, o), "PrivateTmp") is True
    assert value(props_of(elsewhere, o), "ReadWritePaths") == [WORKDIR, "-/run/kb"]
    # A workdir (or venv) under /tmp or /var/tmp would vanish too.
    venv = "/var/tmp/kb/venv/bin/python"
    tmp_spec = replace(elsewhere, argv=(venv, "main.py"))
    assert "PrivateTmp" not in props_of(tmp_spec, o, which_with(venv))
    assert "PrivateTmp" not in props_of(elsewhere, replace(o, workdir="/tmp/kb"))


def test_workdir_under_home_stays_writable() -> None:
    props = props_of(bot(), opts(workdir="/home/serda/kissbot"))
    assert value(props, "ProtectHome") == "read-only"  # not yes/tmpfs: they hide the workdir
    assert value(props, "ReadWritePaths") == ["/home/serda/kissbot", "-/tmp"]


def test_relative_workdir_is_refused() -> None:
    with pytest.raises(UnitError, match="workdir"):
        transient_properties(bot(), opts(workdir="kissbot"), which=which)


# --- restart pacing and start limits ----------------------------------------------------


@pytest.mark.parametrize("version", [252, 254, 256])
@pytest.mark.parametrize("policy", [Policy(), Policy(restart_always=True), Policy(give_up_after=0)])
def test_systemd_never_restarts_a_supervised_unit_by_itself(policy: Policy, version: int) -> None:
    # A failed unit stays failed (visible to systemctl) until the supervisor starts it.
    d = props_of(bot(), opts(policy=policy, manager_version=version))
    assert value(d, "Restart") == "no"
    assert value(d, "StartLimitIntervalUSec") == 0
    assert not {"RestartUSec", "RestartSteps", "RestartMaxDelayUSec", "StartLimitBurst"} & set(d)


# Static units (export.py): systemd alone restarts them.


def test_start_limit_never_trips_before_the_supervisor_gives_up() -> None:
    policy = Policy(give_up_after=5, reset_after_sec=60)
    assert start_limit_burst(policy, is_hub=True) == 10
    assert start_limit_burst(policy, is_hub=False) == 15  # + restarts after the hub restarts
    d = props_of(bot(), opts(policy=policy), supervised=False)
    assert (value(d, "StartLimitBurst"), value(d, "StartLimitIntervalUSec")) == (15, 60_000_000)


def test_never_giving_up_disables_the_start_limit() -> None:
    d = props_of(bot(), opts(policy=Policy(give_up_after=0)), supervised=False)
    assert value(d, "StartLimitIntervalUSec") == 0


def test_restart_always() -> None:
    assert (
        value(
            props_of(bot(), opts(policy=Policy(restart_always=True)), supervised=False), "Restart"
        )
        == "always"
    )


def test_version_252_vs_254() -> None:
    policy = Policy(delay_sec=1.0, max_delay_sec=60.0)
    old = props_of(bot(), opts(policy=policy, manager_version=252), supervised=False)
    new = props_of(bot(), opts(policy=policy, manager_version=254), supervised=False)
    assert value(old, "RestartUSec") == 60_000_000
    assert "RestartSteps" not in old
    assert "RestartMaxDelayUSec" not in old
    assert value(new, "RestartUSec") == 1_000_000
    assert value(new, "RestartSteps") == 5
    assert value(new, "RestartMaxDelayUSec") == 60_000_000
    assert set(new) - set(old) == {"RestartSteps", "RestartMaxDelayUSec"}
    check_types(
        transient_properties(
            bot(), opts(policy=policy, manager_version=255), which, supervised=False
        ),
        255,
    )


@pytest.mark.parametrize(("delay", "maximum"), [(1, 60), (0.5, 30), (2, 3), (1, 1024), (5, 300)])
def test_systemd_254_schedule_is_never_earlier_than_the_supervisor(
    delay: float, maximum: float
) -> None:
    policy = Policy(delay_sec=delay, max_delay_sec=maximum)
    d = props_of(bot(), opts(policy=policy, manager_version=254), supervised=False)
    steps = value(d, "RestartSteps")
    assert isinstance(steps, int)
    for i in range(steps + 3):  # systemd's formula for restart i+1 (src/core/service.c)
        systemd = min(delay * (maximum / delay) ** (i / steps), maximum)
        assert systemd >= policy.backoff(i + 1) - 1e-9
    assert math.isclose(delay * (maximum / delay) ** (steps / steps), maximum)


def test_254_without_a_progression_keeps_the_fallback() -> None:
    d = props_of(
        bot(),
        opts(policy=Policy(delay_sec=5, max_delay_sec=5), manager_version=256),
        supervised=False,
    )
    assert value(d, "RestartUSec") == 5_000_000
    assert "RestartSteps" not in d


def test_slice_properties() -> None:
    assert slice_properties(opts()) == [
        ("Description", ("s", "KissBot fleet (hub and bots)")),
        ("MemoryAccounting", ("b", True)),
    ]
    props = slice_properties(opts(memory_max=2 << 30, tasks_max=512))
    assert dict(props)["MemoryMax"] == ("t", 2 << 30)
    assert dict(props)["TasksMax"] == ("t", 512)
    check_types(props)


# --- static export ------------------------------------------------------------------------


def fleet(python: str = PY) -> list[ProcessSpec]:
    specs = [HUB_SPEC, bot("el_serda"), bot("morthal_"), bot("pelerin_42")]
    return [replace(s, argv=(python, *s.argv[1:])) for s in specs]


def test_export_files_and_template(tmp_path: Path) -> None:
    cred = tmp_path / "token"
    cred.write_text("oauth:s3cr3t")
    files = dict(export.export_units(fleet(), opts(credential_path=str(cred)), which=which))
    assert set(files) == {
        "kissbot.slice",
        "kissbot-hub.service",
        "kissbot-bot@.service",
        "kissbot.target",
    }
    template = files["kissbot-bot@.service"]
    assert "--channel %i " in template
    assert "Description=KissBot bot for #%i" in template
    assert "LogExtraFields=KISSBOT_CHANNEL=%i" in template
    assert "el_serda" not in template
    assert "morthal_" not in template
    assert "Wants=kissbot-hub.service" in template
    assert "After=kissbot-hub.service" in template
    assert "PartOf=kissbot.target" in template
    everything = "\n".join(files.values())
    for secret in ("s3cr3t", "LoadCredential", "Environment", "SetCredential", str(cred)):
        assert secret not in everything
    assert files["kissbot.target"].count("kissbot-bot@") == 3
    assert "WantedBy=multi-user.target" in files["kissbot.target"]


def test_export_refuses_bots_that_differ_beyond_the_channel() -> None:
    specs = [
        replace(bot("el_serda"), argv=(PY, "main.py", "--channel=el_serda")),
        replace(bot("morthal_"), argv=(PY, "main.py", "--channel=morthal_")),
    ]
    with pytest.raises(export.ExportError, match="differs"):
        export.export_units(specs, opts(), which=which)


@pytest.mark.parametrize(
    ("word", "written"),
    [
        ("main.py", "main.py"),
        ("a b", '"a b"'),
        ("100%", "100%%"),
        ("$HOME", '"$$HOME"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        (";", '";"'),
    ],
)
def test_exec_words(word: str, written: str) -> None:
    assert export.exec_word(word) == written


def test_timespans() -> None:
    assert [export.timespan(v) for v in (0, 1_000_000, 1_500_000, 1_500, USEC_INFINITY)] == [
        "0",
        "1s",
        "1500ms",
        "1500us",
        "infinity",
    ]


def run_verify(directory: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(directory / u) for u in units)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_systemd_analyze_accepts_the_exported_files(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    control = tmp_path / "control"
    control.mkdir()
    (control / "kb-control.service").write_text(f"[Service]\nExecStart={sys.executable} -V\n")
    probe = run_verify(control, "kb-control.service")
    if probe.returncode != 0 or probe.stdout.strip() or probe.stderr.strip():
        pytest.skip(f"systemd-analyze verify cannot run here: {probe.stderr.strip()[:200]}")
    out = tmp_path / "units"
    out.mkdir()
    o = opts(workdir=str(tmp_path), memory_max=1 << 30, tasks_max=256, user=None)
    for name, text in export.export_units(fleet(sys.executable), o, which=shutil.which):
        (out / name).write_text(text)
    # An instance of the template, as systemd loads it, plus every file itself.
    result = run_verify(
        out,
        "kissbot.slice",
        "kissbot-hub.service",
        "kissbot-bot@.service",
        "kissbot-bot@el_serda.service",
        "kissbot.target",
    )
    assert result.returncode == 0, result.stderr
    # Unknown keys and unparsable values are only warnings: none may appear.
    assert (result.stdout + result.stderr).strip() == ""


# --- settings -----------------------------------------------------------------------------


def test_systemd_settings_parse_from_the_file() -> None:
    doc = {
        "supervisor": {
            "systemd": {
                "user": "kissbot",
                "group": "kissbot",
                "memory_max": "2G",
                "tasks_max": 512,
                "hardening": False,
                "slice": "kissbot-prod.slice",
                "read_write_paths": ["/srv/kissbot-data"],
            }
        }
    }
    s = read_settings(doc, "config.yaml")
    assert (s.systemd_user, s.systemd_group) == ("kissbot", "kissbot")
    assert (s.systemd_memory_max, s.systemd_tasks_max) == (2 << 30, 512)
    assert (s.systemd_hardening, s.systemd_slice) == (False, "kissbot-prod.slice")
    assert s.systemd_read_write_paths == ("/srv/kissbot-data",)


def test_systemd_settings_defaults_and_flags() -> None:
    s = read_settings({}, "config.yaml")
    assert (s.systemd_user, s.systemd_group, s.systemd_memory_max, s.systemd_tasks_max) == (
        None,
        None,
        None,
        None,
    )
    assert (s.systemd_slice, s.systemd_hardening, s.systemd_read_write_paths) == (
        "kissbot.slice",
        True,
        (),
    )
    s = read_settings({}, "config.yaml", {"systemd_memory_max": "512M", "systemd_tasks_max": "64"})
    assert (s.systemd_memory_max, s.systemd_tasks_max) == (512 << 20, 64)


@pytest.mark.parametrize(
    ("key", "raw", "rule"),
    [
        ("memory_max", "2X", "not a size"),
        ("memory_max", True, "not a size"),
        ("memory_max", 100, "out of range"),
        ("memory_max", "1.5", "out of range"),
        ("tasks_max", 0, "whole number"),
        ("slice", "kissbot", "slice unit name"),
        ("slice", "-.slice", "slice unit name"),
        ("user", "bad user", "user or group"),
        ("read_write_paths", ["relative"], "absolute path"),
        ("hardening", "maybe", "boolean"),
    ],
)
def test_systemd_settings_errors(key: str, raw: object, rule: str) -> None:
    with pytest.raises(ConfigError, match=rule) as info:
        read_settings({"supervisor": {"systemd": {key: raw}}}, "config.yaml")
    assert f"supervisor.systemd.{key}" in str(info.value)


def test_unknown_systemd_key_gets_a_hint() -> None:
    with pytest.raises(ConfigError, match=r"did you mean supervisor\.systemd\.user"):
        read_settings({"supervisor": {"systemd": {"usr": "x"}}}, "config.yaml")


def test_memory_max_sizes() -> None:
    parse = read_settings
    for raw, expected in [("1.5G", 3 << 29), ("4096", 4096), (1 << 20, 1 << 20), ("2 m", 2 << 20)]:
        s = parse({"supervisor": {"systemd": {"memory_max": raw}}}, "c.yaml")
        assert s.systemd_memory_max == expected


def test_options_from_config(tmp_path: Path) -> None:
    import yaml

    from kissbot_supervisor.backends.systemd.units import options_from_config
    from kissbot_supervisor.config.load import load_config
    from kissbot_supervisor.config.specs import build_policy

    supervisor = {
        "hub": {"enabled": True, "socket": "/run/kissbot/hub.sock"},
        "use_db": True,
        "db": "/srv/kissbot/kissbot.db",
        "systemd": {
            "user": "kissbot",
            "memory_max": "1G",
            "tasks_max": 100,
            "read_write_paths": ["/srv/kissbot", "/var/cache/kb"],
        },
    }
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(
        yaml.safe_dump({"twitch": {"channels": ["el_serda"]}, "supervisor": supervisor})
    )
    cfg = load_config(tmp_path, "config/config.yaml")
    o = options_from_config(cfg, build_policy(cfg), 252, credential_path="/run/ks/c/hub/token")
    assert o.workdir == str(tmp_path.resolve())
    assert o.read_write_paths == ("/srv/kissbot", "/run/kissbot", "/var/cache/kb")
    assert (o.hub_enabled, o.user, o.group, o.slice, o.hardening) == (
        True,
        "kissbot",
        None,
        "kissbot.slice",
        True,
    )
    assert (o.memory_max, o.tasks_max, o.manager_version) == (1 << 30, 100, 252)
    assert o.credential_path == "/run/ks/c/hub/token"
    # A DB inside the workdir needs no entry of its own; the default hub socket's /tmp does.
    (tmp_path / "config" / "config.yaml").write_text(
        yaml.safe_dump(
            {"twitch": {"channels": ["el_serda"]}, "supervisor": {"hub": {"enabled": True}}}
        )
    )
    cfg = load_config(tmp_path, "config/config.yaml")
    assert options_from_config(cfg, build_policy(cfg), 252).read_write_paths == ("/tmp",)
