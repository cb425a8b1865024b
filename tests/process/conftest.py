from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from linewatch import wait_until

from .harness import Supervisor, check_preload, children_of, pid_alive, preloaded_demo, write_config

StartFleet = Callable[..., Supervisor]


@pytest.fixture
def start_fleet(tmp_path: Path) -> Iterator[StartFleet]:
    """Start the installed supervisor on a config dict; stopped (and checked) at teardown."""
    running: list[Supervisor] = []
    preloaded: list[Supervisor] = []

    def start(
        doc: dict[str, Any],
        *args: str,
        workdir: Path | None = None,
        runtime_dir: Path | None = None,
    ) -> Supervisor:
        wd = workdir or tmp_path
        write_config(wd, doc)
        sup = Supervisor(wd, args, runtime_dir)
        running.append(sup)
        if preloaded_demo(doc):
            preloaded.append(sup)
        return sup

    yield start
    for sup in preloaded:
        check_preload(sup, True)
    kids = [k for sup in running for k in children_of(sup.proc.pid)]
    for sup in running:
        sup.stop()
    # Nothing outlives the supervisor.
    wait_until(lambda: not any(pid_alive(k) for k in kids), what="children gone")
