"""Start-up: what ``kissbot-supervisor`` does before (or instead of) supervising.

``--check-config`` (:func:`check_config`), ``export-units``
(:func:`export_static_units`), and the choice of a backend and the making of
the daemon (:func:`make_supervisor`).
"""

from __future__ import annotations

from pathlib import Path

from ..config.settings import Settings
from ..config.specs import build_policy
from ..runtime.log import Log
from ..runtime.resources import make_undumpable
from .launch import LaunchOptions, StartupError, load_launch
from .supervisor import Supervisor


def check_config(launch: LaunchOptions) -> tuple[str, list[str]]:
    """``--check-config``: what would run, and what of it would fail here (see
    :mod:`.preflight`); StartupError for a config that cannot be used at all."""
    from .preflight import preflight

    cfg, specs = load_launch(launch)
    lines = [f"{cfg.config_file}: OK, {len(cfg.channels)} channels"]
    if cfg.settings_file is not None:
        lines.append(f"{cfg.settings_file}: OK, the supervisor's settings")
    problems, notes = preflight(cfg, specs, _bots_owner_if_systemd(cfg.settings))
    lines += [f"note: {note}" for note in (*cfg.notes, *notes)]
    lines += [f"  {spec.name}: {' '.join(spec.argv)}" for spec in specs]
    return "\n".join(lines), problems


def _bots_owner_if_systemd(s: Settings) -> tuple[int, int] | None:
    """The bots' (UID, GID) when the systemd backend would run them as systemd.user;
    None when they would run as this user (the native backend, chosen or fallen back to)."""
    if s.backend == "native" or s.systemd_user is None:
        return None
    if s.backend == "auto":
        from ..backends.systemd.backend import systemd_available

        if systemd_available() is not None:
            return None  # auto falls back to native here
    from .supervisor import bots_owner

    return bots_owner(s)


def choose_backend(wanted: str, log: Log) -> str:
    """``auto``: systemd when PID 1 is systemd and its bus is there, else native."""
    if wanted == "native":
        return "native"
    from ..backends.systemd.backend import systemd_available

    why_not = systemd_available()
    if why_not is None:
        return "systemd"
    if wanted == "systemd":
        raise StartupError(f"supervisor.backend is systemd, but {why_not}; use --backend native")
    log.info("supervisor", f"using the native backend: {why_not}")
    return "native"


def export_static_units(launch: LaunchOptions, directory: Path) -> list[Path]:
    """``kissbot-supervisor export-units DIR``: static unit files for this config."""
    import subprocess

    from ..backends.systemd.export import export_units
    from ..backends.systemd.messages import parse_version_text
    from ..backends.systemd.units import UnitError, options_from_config

    cfg, specs = load_launch(launch)
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
    make_undumpable()  # before the config (and any token in it) is read
    cfg, _specs = load_launch(launch)
    log = Log()
    kind = choose_backend(cfg.settings.backend, log)
    try:
        return Supervisor(launch, cfg, kind, log)
    except Exception as e:
        from ..backends.systemd.bus import BusError

        if kind == "systemd" and cfg.settings.backend == "auto" and isinstance(e, BusError):
            log.info("supervisor", f"using the native backend: {e}")
            return Supervisor(launch, cfg, "native", log)
        if isinstance(e, BusError):
            raise StartupError(str(e)) from None
        raise
