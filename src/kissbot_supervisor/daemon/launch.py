"""What the command line hands the daemon, and the config read and checked from it."""

from __future__ import annotations

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


def load_launch(launch: LaunchOptions) -> tuple[Config, tuple[core.ProcessSpec, ...]]:
    """The config and the process specs, checked; StartupError says what is wrong."""
    try:
        cfg = load_config(
            launch.workdir,
            launch.config_path,
            launch.flags,
            interactive=launch.interactive,
            isolate=True,
        )
        specs = build_specs(cfg)
        check_token_source(cfg)
    except ConfigError as e:
        raise StartupError(str(e)) from None
    return cfg, specs
