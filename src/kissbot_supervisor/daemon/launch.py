"""What the command line hands the daemon, and the config read and checked from it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .. import core
from ..config.load import Config, ConfigError, load_config
from ..config.specs import build_specs
from ..core.records import record
from ..tokens.gate import check_token_source

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class StartupError(Exception):
    """The supervisor cannot start; the message says why."""


@record
class LaunchOptions:
    workdir: Path
    config_path: str
    flags: Mapping[str, Any]
    interactive: bool = False
    settings_file: Path | None = None
    settings_optional: bool = True  # the default path: used when it exists


def read_config(launch: LaunchOptions) -> Config:
    """The config as the command line says, read again at each start and reload
    (a settings file made at the default path since the start is used)."""
    settings = launch.settings_file
    if settings is not None and launch.settings_optional and not os.path.lexists(settings):
        settings = None
    return load_config(
        launch.workdir,
        launch.config_path,
        launch.flags,
        interactive=launch.interactive,
        isolate=True,
        settings_file=settings,
    )


def load_launch(launch: LaunchOptions) -> tuple[Config, tuple[core.ProcessSpec, ...]]:
    """The config and the process specs, checked; StartupError says what is wrong."""
    try:
        cfg = read_config(launch)
        specs = build_specs(cfg)
        check_token_source(cfg)
    except ConfigError as e:
        raise StartupError(str(e)) from None
    return cfg, specs
