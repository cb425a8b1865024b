"""Static unit files equivalent to the transient units, for running without a resident supervisor.

:func:`export_units` renders ``kissbot.slice``, ``kissbot-hub.service``, the
template ``kissbot-bot@.service`` (the channel is ``%i``) and ``kissbot.target``,
which ``Wants=`` the hub and one instance per configured channel. The files
come from the very property lists :func:`.units.transient_properties` builds,
translated key by key, and every channel's instance of the template is checked
to render exactly like that channel's own unit.

Static files or the supervisor's transient units: one or the other, never both.
systemd refuses a transient unit whose name has a unit file (an instance of an
installed ``kissbot-bot@.service`` included: "already loaded or has a fragment
file"), so with these files installed the supervisor's systemd backend cannot
create its units. To switch to static units: ``systemctl disable --now
kissbot-supervisor``; stop the transient units, which outlive the supervisor by
design (``systemctl stop 'kissbot-bot@*' kissbot-hub``) and clear any failed one
(``systemctl reset-failed 'kissbot-*'``) so that no transient unit holds a name;
copy the files to ``/etc/systemd/system/``; ``systemctl daemon-reload``;
``systemctl enable --now kissbot.target``. Back: ``systemctl disable --now
kissbot.target``; remove ``kissbot-hub.service``, ``kissbot-bot@.service`` and
``kissbot.target`` (an installed ``kissbot.slice`` may stay: the supervisor
uses it as it is); ``systemctl daemon-reload``; start the supervisor.

What differs from the transient units, by design:

* no ``LoadCredential=``: there is no supervisor to decrypt a token into a file;
  the bots read their tokens from the DB or the YAML file, as upstream;
* ``PartOf=kissbot.target`` on every service, so stopping or restarting the
  target stops or restarts the fleet, and ``After=``/``Wants=network-online.target``
  since they start at boot;
* only systemd paces restarts: ``RestartSec=`` is ``restart.max_delay_sec``
  before systemd 254 (export for the version you run: ``manager_version``), and
  nothing parks a bot that keeps failing except the start limit; nothing restarts
  the bots after the hub restarts either.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Sequence

from ...core import ProcessSpec
from ...core.records import replace
from ...kissbot.names import HUB_UNIT
from .units import (
    USEC_INFINITY,
    Property,
    UnitError,
    UnitOptions,
    slice_properties,
    transient_properties,
)

TEMPLATE = "kissbot-bot@.service"
TARGET = "kissbot.target"
UNIT_SECTION = frozenset(
    {"Description", "After", "Wants", "PartOf", "StartLimitBurst", "StartLimitIntervalUSec"}
)
_SIMPLE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_SPECIFIER = re.compile(r"%[i%]")


class ExportError(UnitError):
    pass


def timespan(value: int) -> str:
    """A time in microseconds as unit-file text (exact: no rounding)."""
    if value == USEC_INFINITY:
        return "infinity"
    for unit, size in (("s", 1_000_000), ("ms", 1_000)):
        if value and value % size == 0:
            return f"{value // size}{unit}"
    return f"{value}us" if value else "0"


def escape(text: str) -> str:
    """Plain unit-file value: ``%`` starts a specifier, so it is doubled."""
    if "\n" in text:
        raise ExportError(text, "contains a newline")
    return text.replace("%", "%%")


def _quote(text: str) -> str:
    """A word as systemd's word splitter reads it back: bare if simple, else C-quoted."""
    if _SIMPLE_WORD.fullmatch(text) and text != ";":
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_word(word: str) -> str:
    """One ExecStart= word: ``%`` and ``$`` (variable expansion) escaped, quoted if needed."""
    return _quote(escape(word).replace("$", "$$"))


def _path_list(paths: Sequence[str]) -> str:
    return " ".join(_quote(escape(p)) for p in paths)


def _exec_lines(
    key: str, value: list[tuple[str, list[str], bool]], channel: str | None
) -> list[str]:
    lines = []
    for path, argv, ignore in value:
        words = ["%i" if w == channel else exec_word(w) for w in argv]
        head = exec_word(path)
        if argv[0] != path:  # "@": the path to run, then argv[0] as given
            head = f"@{head} {words[0]}"
        lines.append(" ".join([f"{key}={'-' if ignore else ''}{head}", *words[1:]]))
    return lines


def render_value(name: str, sig: str, value: object, channel: str | None = None) -> list[str]:
    """``Key=value`` lines for one D-Bus property (the inverse of systemd's parser).

    With ``channel``, the lines are for the template: where the value names the
    channel (the end of Description, SyslogIdentifier, KISSBOT_CHANNEL, a whole
    ExecStart word) it becomes ``%i``.
    """
    key = name[: -len("USec")] + "Sec" if name.endswith("USec") else name

    def named(text: str) -> str:
        out = escape(text)  # a login has no "%": the escaped text still ends with it
        return out[: -len(channel)] + "%i" if channel and out.endswith(channel) else out

    if sig == "s" and isinstance(value, str):
        templated = name in ("Description", "SyslogIdentifier")
        return [f"{key}={named(value) if templated else escape(value)}"]
    if sig == "b":
        return [f"{key}={'yes' if value else 'no'}"]
    if sig == "t" and isinstance(value, int):
        if name.endswith("USec"):
            return [f"{key}={timespan(value)}"]
        if name == "RestrictNamespaces" and value == 0:
            return [f"{key}=yes"]
        if name == "CapabilityBoundingSet" and value == 0:
            return [f"{key}="]  # the empty assignment is the empty set
        if name in ("MemoryMax", "TasksMax"):
            return [f"{key}={value}"]
    if sig == "u" and isinstance(value, int):
        return [f"{key}={value:04o}" if name == "UMask" else f"{key}={value}"]
    if sig == "i" and name == "SystemCallErrorNumber" and isinstance(value, int):
        return [f"{key}={errno.errorcode[value]}"]
    if sig == "i" and name == "OOMScoreAdjust" and isinstance(value, int):
        return [f"{key}={value}"]
    if sig == "as" and isinstance(value, list):
        return [f"{key}={_path_list(value)}"]
    if sig == "(bas)" and isinstance(value, tuple):
        allow, items = value
        return [f"{key}={'' if allow else '~'}{' '.join(items)}"]
    if sig == "aay" and isinstance(value, list):
        fields = [f.decode() for f in value]
        return [
            f"{key}={named(f) if f.startswith('KISSBOT_CHANNEL=') else escape(f)}" for f in fields
        ]
    if sig == "a(ss)" and isinstance(value, list):
        return [f"{key}={escape(ident)}:{escape(path)}" for ident, path in value]
    if sig == "a(sasb)" and isinstance(value, list):
        return _exec_lines(key, value, channel)
    raise ExportError(name, f"has a type ({sig}) or value the exporter cannot write")


def render(props: Sequence[Property], section: str, header: str, channel: str | None = None) -> str:
    unit: list[str] = []
    rest: list[str] = []
    for name, (sig, value) in props:
        (unit if name in UNIT_SECTION else rest).extend(render_value(name, sig, value, channel))
    return f"# {header}\n[Unit]\n" + "\n".join(unit) + f"\n\n[{section}]\n" + "\n".join(rest) + "\n"


def _static(
    spec: ProcessSpec, opts: UnitOptions, which: Callable[[str], str | None] | None
) -> list[Property]:
    """The transient properties, adjusted for units that start at boot without a
    supervisor (systemd restarts them: nobody else will)."""
    props = transient_properties(spec, opts, which, supervised=False)
    out = [p for p in props if p[0] != "LoadCredential"]
    # Without a supervisor to start the hub first, a bot that comes after it
    # (After=) also pulls it in.
    hub = [HUB_UNIT] if ("After", ("as", [HUB_UNIT])) in props else []
    out += [
        ("PartOf", ("as", [TARGET])),
        ("After", ("as", ["network-online.target"])),
        ("Wants", ("as", [*hub, "network-online.target"])),
    ]
    return out


def _instantiate(template: str, channel: str) -> str:
    """What systemd makes of the template for one instance (``%%`` stays escaped here)."""
    return _SPECIFIER.sub(lambda m: channel if m[0] == "%i" else "%%", template)


def export_units(
    specs: Sequence[ProcessSpec],
    opts: UnitOptions,
    which: Callable[[str], str | None] | None = None,
) -> list[tuple[str, str]]:
    """(file name, content) of the static units for ``specs``; raises :class:`ExportError`
    when the bots' commands differ by more than the channel name (no template fits)."""
    hub = [s for s in specs if s.is_hub]
    bots = [s for s in specs if not s.is_hub]
    opts = replace(opts, credential_path=None, hub_enabled=bool(hub))
    note = "Generated by kissbot-supervisor's export; exclusive with its transient units."
    files: list[tuple[str, str]] = [
        (opts.slice, render(slice_properties(opts), "Slice", note)),
    ]
    if hub:
        props = _static(hub[0], opts, which)
        files.append((HUB_UNIT, render(props, "Service", note)))
    if bots:
        first = bots[0]
        props = _static(first, opts, which)
        template = render(props, "Service", note, channel=first.name)
        for bot in bots:
            own = render(_static(bot, opts, which), "Service", note)
            if _normalise(_instantiate(template, bot.name)) != _normalise(own):
                raise ExportError(
                    bot.name, "has a command that differs from the other bots' beyond the channel"
                )
        files.append((TEMPLATE, template))
    wants = [HUB_UNIT] if hub else []
    wants += [f"kissbot-bot@{b.name}.service" for b in bots]
    target = (
        f"# {note}\n[Unit]\nDescription=KissBot fleet (static units)\n"
        f"Wants={' '.join(wants)}\n\n[Install]\nWantedBy=multi-user.target\n"
    )
    files.append((TARGET, target))
    return files


def _normalise(text: str) -> list[str]:
    """Lines of a unit, sorted within sections: the order of keys does not matter."""
    sections: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("["):
            sections.append([line])
        elif line and not line.startswith("#") and sections:
            sections[-1].append(line)
    return [line for s in sections for line in [s[0], *sorted(s[1:])]]
