"""A runtime directory another user made first (or can write in) is refused: whoever
owns it could replace the control socket and answer for the supervisor."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from process.harness import SUPERVISOR, TIMEOUT, fleet_config, write_config

from .conftest import BOTS_UID


@pytest.mark.parametrize("squat", ["another user's", "world-writable"])
def test_a_squatted_runtime_dir_stops_the_start(workdir: Path, squat: str) -> None:
    write_config(workdir, fleet_config(["squat_chan"]))
    runtime = workdir.parent / "shared-run"
    runtime.mkdir(mode=0o777)
    runtime.chmod(0o777)
    if squat == "another user's":
        os.chown(runtime, BOTS_UID, BOTS_UID)
    result = subprocess.run(
        [SUPERVISOR, "--workdir", str(workdir), "--runtime-dir", str(runtime),
         "--non-interactive"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"the runtime directory {runtime}" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert list(runtime.iterdir()) == []  # no socket was made there
