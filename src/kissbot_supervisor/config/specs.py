"""From a :class:`~.config.Config` to the fleet: one :class:`~.core.ProcessSpec` per process.

Pure functions, shared by both backends, so a bot's argv is the same whether
the native backend execs it or systemd gets it as ``ExecStart``.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path

from ..core import HUB, LIVENESS_CHECKS, Policy, ProcessSpec
from ..kissbot.names import system_log
from .load import Config, ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core import ReadyMode

PLACEHOLDERS = ("python", "channel", "config", "db", "hub_socket", "eventsub", "supervisor_python")


def kissbot_python(workdir: Path) -> str:
    """The interpreter upstream uses: the KissBot venv when present, else python3."""
    venv = workdir / "kissbot-venv" / "bin" / "python"
    return str(venv) if venv.exists() else "python3"


def upstream_bot_argv(cfg: Config) -> tuple[str, ...]:
    s = cfg.settings
    argv = ["{python}", "main.py", "--channel", "{channel}", "--config", "{config}"]
    argv += ["--eventsub", "{eventsub}"]
    if s.use_db:
        argv += ["--use-db", "--db", "{db}"]
    if s.hub_enabled:
        argv += ["--hub-socket", "{hub_socket}"]
    return tuple(argv)


UPSTREAM_HUB_ARGV = (
    "{python}",
    "eventsub_hub.py",
    "--config",
    "{config}",
    "--db",
    "{db}",
    "--socket",
    "{hub_socket}",
)


def expand(
    template: tuple[str, ...], values: dict[str, str], source: str, key: str
) -> tuple[str, ...]:
    """Fill the placeholders; an unknown one is a config error naming it."""
    out = []
    for i, arg in enumerate(template):
        try:
            fields = list(string.Formatter().parse(arg))
        except ValueError as e:  # "{python" or a lone "}": parse() raises, not format()
            raise ConfigError(
                source, f"{key}[{i}]", f"{arg!r} is not a valid template ({e})"
            ) from None
        for _text, field, spec, conv in fields:
            if field is not None and (spec or conv):
                # {python:>800000000} is 800 MB of padding: a placeholder is its
                # value, nothing else (an attribute or an index is refused below).
                raise ConfigError(
                    source,
                    f"{key}[{i}]",
                    f"{arg!r} uses {{{field}{'!' + conv if conv else ''}"
                    f"{':' + spec if spec else ''}}}; placeholders take no format "
                    f"spec or conversion, write {{{field}}}",
                )
            if field is not None and field not in values:
                known = " ".join("{" + p + "}" for p in PLACEHOLDERS)
                raise ConfigError(
                    source, f"{key}[{i}]", f"{arg!r} uses {{{field}}}; known placeholders: {known}"
                )
        try:
            out.append(arg.format(**values))
        except (ValueError, IndexError) as e:
            raise ConfigError(
                source, f"{key}[{i}]", f"{arg!r} is not a valid template ({e})"
            ) from None
    return tuple(out)


# hub.liveness_sec: the shortest pace, above the protocol check's own reply time (2 s).
LIVENESS_MIN_SEC = 3.0


def hub_liveness(cfg: Config) -> str | None:
    """What the hub's liveness check checks (the core names it in the fault), or None."""
    s = cfg.settings
    if s.hub_liveness_sec <= 0:
        return None
    key = "supervisor.hub.liveness_sec"
    if s.hub_liveness_sec < LIVENESS_MIN_SEC:
        raise ConfigError(
            str(cfg.config_path),
            key,
            f"{s.hub_liveness_sec:g} is too short (at least {LIVENESS_MIN_SEC:g} s: a check "
            "waits up to 2 s for the hub's answer)",
        )
    if s.hub_watchdog_sec > 0:
        raise ConfigError(
            str(cfg.config_path),
            key,
            "cannot be used together with hub.watchdog_sec: a hub that sends WATCHDOG=1 "
            "needs no liveness check; set one of them to 0",
        )
    if s.hub_ready == "db":
        return "hub_state.ws_state 'connected'"
    return "pong to hello + ping"


def bot_liveness(cfg: Config) -> bool:
    """Whether the bots' liveness is their ``system.log`` (``bot.liveness``)."""
    s = cfg.settings
    if s.bot_liveness != "system-log":
        return False
    if s.bot_watchdog_sec > 0:
        raise ConfigError(
            str(cfg.config_path),
            "supervisor.bot.liveness",
            "system-log cannot be used together with bot.watchdog_sec: a bot that sends "
            "WATCHDOG=1 needs no file watched; set bot.watchdog_sec to 0 or bot.liveness "
            "to none",
        )
    return True


def build_specs(cfg: Config, python: str | None = None) -> tuple[ProcessSpec, ...]:
    """The hub (when enabled) and one bot per channel, in config order."""
    s = cfg.settings
    values = {
        "python": python or kissbot_python(cfg.workdir),
        "supervisor_python": sys.executable,
        "config": str(cfg.config_path),
        "db": s.db,
        "hub_socket": s.hub_socket,
        "eventsub": "hub" if s.hub_enabled else "direct",
    }
    source = str(cfg.config_path)
    specs: list[ProcessSpec] = []
    if s.hub_enabled:
        hub_ready: ReadyMode = s.hub_ready  # type: ignore[assignment]
        watchdog_sec, liveness = s.hub_watchdog_sec, hub_liveness(cfg)
        if liveness is not None:
            watchdog_sec = LIVENESS_CHECKS * s.hub_liveness_sec
        specs.append(
            ProcessSpec(
                name=HUB,
                argv=expand(
                    s.hub_command or UPSTREAM_HUB_ARGV, values, source, "supervisor.hub.command"
                ),
                ready=hub_ready,
                watchdog_sec=watchdog_sec,
                start_timeout_sec=s.hub_start_timeout_sec,
                oom_score_adjust=s.hub_oom_score_adjust,
                liveness=liveness,
            )
        )
    bot_template = s.bot_command or upstream_bot_argv(cfg)
    bot_ready: ReadyMode = s.bot_ready  # type: ignore[assignment]
    by_file = bot_liveness(cfg)
    for channel in cfg.channels:
        argv = expand(
            bot_template, {**values, "channel": channel}, source, "supervisor.bot.command"
        )
        file = system_log(channel) if by_file else None
        specs.append(
            ProcessSpec(
                name=channel,
                argv=argv,
                ready=bot_ready,
                watchdog_sec=s.bot_liveness_silence_sec if by_file else s.bot_watchdog_sec,
                liveness=None if file is None else f"write to {file}",
                liveness_file=file,
                start_timeout_sec=s.bot_start_timeout_sec,
                oom_score_adjust=s.bot_oom_score_adjust,
                memory_max=s.bot_memory_max,
            )
        )
    return tuple(specs)


def build_policy(cfg: Config, *, backend_watchdog: bool = False) -> Policy:
    s = cfg.settings
    return Policy(
        backend_watchdog=backend_watchdog,
        delay_sec=s.restart_delay_sec,
        max_delay_sec=s.restart_max_delay_sec,
        reset_after_sec=s.restart_reset_after_sec,
        give_up_after=s.restart_give_up_after,
        stop_timeout_sec=s.stop_timeout_sec,
        restart_always=s.restart_mode == "always",
        hub_restart_bots=s.hub_restart_bots,
        logins_per_window=s.bot_logins_per_10s,
        retry_parked_sec=s.restart_retry_parked_sec,
        retry_parked_max_sec=s.restart_retry_parked_max_sec,
    )
