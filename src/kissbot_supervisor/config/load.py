"""Reading the KissBot config file, the settings file and the command line into a :class:`Config`.

Precedence is explicit: command-line flags, then the ``supervisor:`` section
of the settings file, then the defaults declared in :mod:`.settings`.

Where the settings come from is a security decision (docs/security.md). They
choose what runs and as whom (``bot.command``, ``on_failure``,
``systemd.user``), so they are read only from a file nobody but root or the
supervisor's own user can change: the settings file (``--settings``, by
default ``/etc/kissbot-supervisor/supervisor.yaml`` when it exists); without
one, the ``supervisor:`` section of KissBot's config, but only when that file
and every directory above it pass the same test. In production the KissBot
checkout belongs to the bots' user, so its config is KissBot's alone.

Everything else in KissBot's config belongs to the bot and the hub and is
only read, never judged, except ``twitch.channels`` (which becomes argv, unit
names and file paths, so every name is checked here) and ``bot.name`` /
``twitch.broadcaster_id`` (which pick tokens).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.records import record
from ..kissbot.names import DEFAULT_BOT_LOGIN, YAML_TOKEN_TEXTS
from ..runtime.fs import base_of, others_can_write, read_with_stat
from .paths import SETTINGS_FILE
from .settings import Settings, SettingValueError, declarations, shown, twitch_login

# typing is imported for the type checker only (it costs the daemon 0.4 MiB).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ConfigError(Exception):
    """A config file or flag is wrong; the message names where, the value and the rule."""

    def __init__(self, source: str, key: str | None, message: str) -> None:
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.key = key


def check_login(name: object) -> str:
    """Return the lowercased login, or raise SettingValueError (settings.twitch_login)."""
    return twitch_login(name)


@record
class Config:
    """Everything the supervisor needs, resolved and checked."""

    workdir: Path
    config_path: Path  # as given (relative to workdir when relative): it goes in argv
    channels: tuple[str, ...]
    bot_login: str
    broadcaster_id: str | None
    settings: Settings
    # What the token states need of the file (bot.name, twitch.broadcaster_id,
    # twitch.tokens), token texts replaced by TOKEN_TEXT_KEPT_OUT: no secret of the
    # file (tokens, client_secret) stays in the daemon (tokens/gate.py reads a token
    # from the file again when a process starts).
    document: Mapping[str, Any]
    interactive: bool = False
    settings_file: Path | None = None  # where the settings came from, when not KissBot's config
    notes: tuple[str, ...] = ()  # said at start, reload and --check-config; not errors

    def resolve(self, path: str | Path) -> Path:
        """A path from the config, relative to the workdir (never to the caller's cwd)."""
        p = Path(path)
        return p if p.is_absolute() else self.workdir / p

    @property
    def config_file(self) -> Path:
        return self.resolve(self.config_path)


def _describe(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "null" if value is None else type(value).__name__


def _mapping(value: object, source: str, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(source, key, f"expected a mapping, got {_describe(value)}")
    return value


MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a KissBot config is a few KiB


@record
class YamlFile:
    document: Mapping[str, Any]
    path: Path
    stat: os.stat_result  # of the very file that was read

    def writable_by_others(self) -> str | None:
        """Why someone else could change it (see others_can_write); walked only when
        asked: only a file that holds the settings needs it."""
        return others_can_write(self.path, self.stat)


def load_yaml(
    path: Path,
    shown: str,
    *,
    isolate: bool = False,
    base: Path | None = None,
    what: str = "config file",
) -> YamlFile:
    """Parse the file; errors name the file and, for syntax errors, line and column.

    ``isolate`` parses in a child process (see :mod:`.yamlparse`): the resident
    daemon does that, short-lived commands and tests need not.
    """
    from .yamlparse import YamlChildError, parse_here, parse_in_child

    try:
        raw, st = read_with_stat(path, MAX_CONFIG_BYTES, base=base)  # no FIFO, no symlink
    except FileNotFoundError:
        raise ConfigError(shown, None, f"the {what} does not exist") from None
    except OSError as e:
        raise ConfigError(shown, None, f"cannot be read ({e.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            shown, None, f"is bigger than {MAX_CONFIG_BYTES // 1024 // 1024} MiB; not a config"
        )
    try:
        result = parse_in_child(raw) if isolate else parse_here(raw)
    except YamlChildError as e:
        raise ConfigError(shown, None, f"could not be parsed: {e}") from None
    error = result.get("error")
    if error is not None:
        line, column = error.get("line"), error.get("column")
        where = f"line {line}, column {column}" if line is not None else None
        raise ConfigError(shown, where, f"invalid YAML: {error.get('problem')}")
    document = result.get("document")
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise ConfigError(shown, None, f"expected a mapping at the top, got {_describe(document)}")
    return YamlFile(document, path, st)


def _read_channels(document: Mapping[str, Any], source: str) -> tuple[str, ...]:
    twitch = _mapping(document.get("twitch"), source, "twitch")
    channels = twitch.get("channels")
    if channels is None:
        raise ConfigError(source, "twitch.channels", "missing (expected a list of channel logins)")
    if not isinstance(channels, list):
        got = _describe(channels)
        raise ConfigError(
            source, "twitch.channels", f"expected a list of channel logins, got {got}"
        )
    seen: dict[str, int] = {}
    out: list[str] = []
    for i, name in enumerate(channels):
        key = f"twitch.channels[{i}]"
        if name is None:
            # `- #el_serda`: YAML reads what follows '#' as a comment, and the item is empty.
            raise ConfigError(
                source,
                key,
                "is empty; if it reads '- #name', YAML took '#name' for a comment: "
                "write the login without '#' (- el_serda)",
            )
        try:
            login = check_login(name)
        except SettingValueError as e:
            raise ConfigError(source, key, str(e)) from None
        if login in seen:
            raise ConfigError(
                source, key, f"{name!r} is listed twice (first at twitch.channels[{seen[login]}])"
            )
        seen[login] = i
        out.append(login)
    return tuple(out)


def _flatten(section: Mapping[str, Any], source: str, prefix: str = "") -> dict[str, Any]:
    """``{'bot': {'ready': 'file'}}`` -> ``{'bot.ready': 'file'}``, leaves only."""
    known_keys = {meta.key for _, _, meta in declarations()}
    known_sections = {k.rsplit(".", 1)[0] for k in known_keys if "." in k}
    out: dict[str, Any] = {}
    for name, value in section.items():
        key = f"{prefix}{name}"
        if not isinstance(name, str):
            raise ConfigError(source, f"supervisor.{prefix}{shown(name)}", "keys must be strings")
        if key in known_sections:
            out.update(_flatten(_mapping(value, source, f"supervisor.{key}"), source, key + "."))
        elif key in known_keys:
            out[key] = value
        else:
            import difflib  # lazy: only an unknown key needs it

            close = difflib.get_close_matches(key, sorted(known_keys | known_sections), n=1)
            hint = f" (did you mean supervisor.{close[0]}?)" if close else ""
            # A name that is not a plain word ('', 'a b', a newline) is quoted in the path.
            plain = re.fullmatch(r"[A-Za-z0-9_.-]+", name) is not None
            where = f"supervisor.{key}" if plain else f"supervisor.{prefix}{shown(name)}"
            raise ConfigError(source, where, f"is not a known setting{hint}")
    return out


def read_settings(
    document: Mapping[str, Any], source: str, flags: Mapping[str, Any] | None = None
) -> Settings:
    """Settings from the ``supervisor:`` section, overridden by flags (field name -> value)."""
    section = _mapping(document.get("supervisor"), source, "supervisor")
    from_file = _flatten(section, source)
    values: dict[str, Any] = {}
    for name, default, meta in declarations():
        flag_value = (flags or {}).get(name)
        if flag_value is not None:
            where, origin, raw = "command line", meta.flags[0] if meta.flags else name, flag_value
        elif meta.key in from_file:
            where, origin, raw = source, f"supervisor.{meta.key}", from_file[meta.key]
        else:
            values[name] = default
            continue
        try:
            values[name] = meta.parse(raw)
        except SettingValueError as e:
            # A rule that says what it expects is not followed by the kind again.
            expected = "" if "expected" in e.rule else f" ({meta.kind} expected)"
            raise ConfigError(where, origin, f"{e}{expected}") from None
    settings = Settings(**values)
    if settings.restart_max_delay_sec < settings.restart_delay_sec:
        raise ConfigError(
            source,
            "supervisor.restart.max_delay_sec",
            f"{settings.restart_max_delay_sec:g} is below restart.delay_sec "
            f"({settings.restart_delay_sec:g}); expected at least the first delay",
        )
    return settings


def load_config(
    workdir: Path,
    config_path: str | Path = "config/config.yaml",
    flags: Mapping[str, Any] | None = None,
    *,
    interactive: bool = False,
    isolate: bool = False,
    settings_file: Path | None = None,
) -> Config:
    """Read and check everything; raises ConfigError and changes nothing on failure.

    ``settings_file``: the trusted file whose ``supervisor:`` section holds the
    settings; None reads them from KissBot's config, if that file is trusted.
    """
    workdir = workdir.resolve()
    config_path = Path(config_path)
    shown = str(config_path)
    kissbot = load_kissbot_yaml(workdir, config_path, isolate=isolate)
    document = kissbot.document
    settings_source, notes = _settings_source(kissbot, shown, settings_file, isolate=isolate)
    notes += _stray_settings(document, shown)
    channels = _read_channels(document, shown)
    bot_section = _mapping(document.get("bot"), shown, "bot")
    bot_name = bot_section.get("name", DEFAULT_BOT_LOGIN)
    try:
        bot_login = check_login(bot_name)
    except SettingValueError as e:
        raise ConfigError(shown, "bot.name", str(e)) from None
    twitch = _mapping(document.get("twitch"), shown, "twitch")
    broadcaster = twitch.get("broadcaster_id")
    broadcaster_id = None if broadcaster in (None, "") else str(broadcaster)
    settings = read_settings(settings_source[0], settings_source[1], flags)
    return Config(
        workdir=workdir,
        config_path=config_path,
        channels=channels,
        bot_login=bot_login,
        broadcaster_id=broadcaster_id,
        settings=settings,
        document=token_view(document),
        interactive=interactive,
        settings_file=settings_file,
        notes=notes + _advice(settings),
    )


# KissBot writes logs/broadcast/CH/system.log every 60 s: a silence allowed under
# this kills healthy bots that are merely between two lines, or still starting.
LIVENESS_SILENCE_ADVISED_SEC = 120.0


def _advice(settings: Settings) -> tuple[str, ...]:
    """Values that parse but are probably a mistake: said, not refused."""
    if (
        settings.bot_liveness == "system-log"
        and settings.bot_liveness_silence_sec < LIVENESS_SILENCE_ADVISED_SEC
    ):
        return (
            f"supervisor.bot.liveness_silence_sec is {settings.bot_liveness_silence_sec:g} s: "
            "KissBot writes logs/broadcast/CH/system.log only every 60 s and not while it "
            "starts, so healthy bots may be killed as hung; use "
            f"{LIVENESS_SILENCE_ADVISED_SEC:g} s or more (the default is 300) unless the bots "
            "write it more often",
        )
    return ()


def load_kissbot_yaml(workdir: Path, config_path: Path, *, isolate: bool) -> YamlFile:
    """KissBot's config file, read by fs.py's rule when it is in the (bots') workdir."""
    file = config_path if config_path.is_absolute() else workdir / config_path
    return load_yaml(file, str(config_path), isolate=isolate, base=base_of(file, workdir))


SETTINGS_KEY = "supervisor"
TOKEN_TEXT_KEPT_OUT = "(kept out of the supervisor's memory)"


def token_view(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """What token states are read from: ``bot.name``, ``twitch.broadcaster_id`` and
    ``twitch.tokens``, each non-empty token text replaced by a placeholder (an
    empty one stays empty: it says "missing"). A part not of the expected shape
    is kept as it is, for the token checks to name."""
    view: dict[str, Any] = {}
    bot = document.get("bot")
    if bot is not None:
        view["bot"] = {"name": bot["name"]} if isinstance(bot, Mapping) and "name" in bot else {}
    twitch = document.get("twitch")
    if not isinstance(twitch, Mapping):
        return view if twitch is None else {**view, "twitch": twitch}
    view["twitch"] = {k: twitch[k] for k in ("broadcaster_id",) if k in twitch}
    tokens = twitch.get("tokens")
    if not isinstance(tokens, Mapping):
        if tokens is not None:
            view["twitch"]["tokens"] = tokens  # a wrong shape, said by the token checks
        return view
    view["twitch"]["tokens"] = {
        login: {
            key: TOKEN_TEXT_KEPT_OUT
            if key in YAML_TOKEN_TEXTS and isinstance(value, str) and value.strip()
            else value
            for key, value in entry.items()
        }
        if isinstance(entry, Mapping)
        else entry
        for login, entry in tokens.items()
    }
    return view


def _settings_source(
    kissbot: YamlFile, shown: str, settings_file: Path | None, *, isolate: bool
) -> tuple[tuple[Mapping[str, Any], str], tuple[str, ...]]:
    """The document whose ``supervisor:`` section holds the settings, and its name
    for error messages; and notes for the operator. See the module docstring."""
    has_section = bool(kissbot.document.get(SETTINGS_KEY))
    if settings_file is not None:
        trusted = load_yaml(
            settings_file, str(settings_file), isolate=isolate, what="settings file"
        )
        writers = trusted.writable_by_others()
        if writers is not None:
            raise ConfigError(
                str(settings_file),
                None,
                f"not used: {writers}, and these settings choose what "
                "runs and as whom; make the file and its directories root's, not writable "
                "by group or others",
            )
        extra = sorted(str(k) for k in trusted.document if k != SETTINGS_KEY)
        if extra:
            raise ConfigError(
                str(settings_file),
                _shown_key(extra[0]),
                f"is not read here: a settings file holds only a '{SETTINGS_KEY}:' section",
            )
        notes: tuple[str, ...] = ()
        if has_section:
            notes = (
                f"{shown}: the '{SETTINGS_KEY}:' section is ignored: the settings come "
                f"from {settings_file}; move what it holds there",
            )
        return (trusted.document, str(settings_file)), notes
    writers = kissbot.writable_by_others() if has_section else None
    if writers is not None:
        raise ConfigError(
            shown,
            SETTINGS_KEY,
            f"not used: {writers}, and these settings choose what runs "
            f"and as whom; put them in {SETTINGS_FILE} (root's), or pass --settings FILE",
        )
    return (kissbot.document, shown), ()


# KissBot's own top-level sections (docs: kissbot-interfaces), never settings of ours.
KISSBOT_SECTIONS = frozenset({"twitch", "bot", "timeouts", "announcements", "eventsub"})


def _stray_settings(document: Mapping[str, Any], shown: str) -> tuple[str, ...]:
    """Notes for settings written at the top level of KissBot's config, where nothing
    reads them (they belong under 'supervisor:'), rather than silence."""
    known_keys = {meta.key for _, _, meta in declarations()}
    names = known_keys | {k.split(".", 1)[0] for k in known_keys}
    stray = [k for k in document if isinstance(k, str) and k in names - KISSBOT_SECTIONS]
    return tuple(
        f"{shown}: '{key}' at the top level is not read: the supervisor's settings go "
        f"under '{SETTINGS_KEY}:' ({SETTINGS_KEY}.{key})"
        for key in stray
    )


def _shown_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_.-]+", key) else repr(key)


def setting_flags() -> Sequence[tuple[str, tuple[str, ...], bool, str, str]]:
    """(dest, flags, takes no value, kind, help) for every setting that has flags."""
    return [
        (name, meta.flags, meta.boolean_flag, meta.kind, meta.help)
        for name, _default, meta in declarations()
        if meta.flags
    ]
