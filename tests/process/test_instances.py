"""Two supervisors on one host (two KissBot checkouts) never share a runtime directory.

Each started without ``--runtime-dir`` takes a directory of its own in the
shared one (``$XDG_RUNTIME_DIR/kissbot-supervisor``), named after its workdir;
``kissbotctl`` finds the right one from the current directory or
``--workdir``. Two given the same ``--runtime-dir`` are refused: the second
one says whose it is and touches nothing there, so the first one's bots keep
their ``notify.sock``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from linewatch import LineWatcher

from .harness import KISSBOTCTL, SUPERVISOR, TIMEOUT, fleet_config, write_config


class Daemon:
    """``kissbot-supervisor`` in ``workdir`` with ``args``, its log watched."""

    def __init__(self, workdir: Path, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [SUPERVISOR, "--workdir", str(workdir), "--non-interactive", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stderr is not None
        self.log = LineWatcher(self.proc.stderr, f"supervisor in {workdir.name}", TIMEOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(TIMEOUT)
        self.log.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    # Short, as a real $XDG_RUNTIME_DIR is: a socket path has at most 107 bytes.
    xdg = Path(tempfile.mkdtemp(prefix="kbx-", dir="/tmp"))
    skip = {"KISSBOT_CONTROL_SOCKET", "RUNTIME_DIRECTORY", "COLUMNS", "NO_COLOR"}
    out = {k: v for k, v in os.environ.items() if k not in skip}
    out["XDG_RUNTIME_DIR"] = str(xdg)
    yield out
    shutil.rmtree(xdg, ignore_errors=True)


def checkout(tmp_path: Path, name: str, channels: list[str]) -> Path:
    workdir = tmp_path / name
    write_config(workdir, fleet_config(channels))
    return workdir


def ctl(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KISSBOTCTL, *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_two_checkouts_each_get_their_own_runtime_directory(
    tmp_path: Path, env: dict[str, str], daemons: list[Daemon]
) -> None:
    first_dir = checkout(tmp_path, "kissbot", ["first_bot"])
    second_dir = checkout(tmp_path, "kissbot2", ["second_bot"])
    first = Daemon(first_dir, env, "--config", "config/config.yaml")
    daemons.append(first)
    first.log.wait_for(r"first_bot: ready")
    shared = Path(env["XDG_RUNTIME_DIR"]) / "kissbot-supervisor"
    (first_run,) = [p for p in shared.iterdir() if p.is_dir()]
    assert first_run.name.startswith("kissbot-")
    notify = (first_run / "notify.sock").stat().st_ino

    # The second one needs no flag: its own directory, named after its workdir.
    second = Daemon(second_dir, env, "--config", "config/config.yaml")
    daemons.append(second)
    second.log.wait_for(r"second_bot: ready")
    runs = sorted(p.name for p in shared.iterdir() if p.is_dir())
    assert len(runs) == 2
    assert (first_run / "notify.sock").stat().st_ino == notify  # the first one's, untouched

    # kissbotctl finds each from its checkout (or below it), or --workdir.
    status = ctl(env, first_dir / "config", "status")
    assert status.returncode == 0, status.stderr
    assert "first_bot" in status.stdout
    assert "second_bot" not in status.stdout
    other = ctl(env, first_dir, "--workdir", str(second_dir), "status", "second_bot")
    assert other.returncode == 0, other.stderr
    # Anywhere else it cannot guess: it says so, and how to choose.
    lost = ctl(env, tmp_path, "status")
    assert lost.returncode == 1
    assert lost.stderr.startswith("kissbotctl: 2 supervisors run on this host (")
    assert "say which: --workdir DIR (its KissBot root) or --socket PATH" in lost.stderr
    first.stop()
    # With one left, that one is found from anywhere.
    alone = ctl(env, tmp_path, "status")
    assert alone.returncode == 0, alone.stderr
    assert "second_bot" in alone.stdout


def test_a_second_supervisor_on_the_same_runtime_dir_is_refused(
    tmp_path: Path, env: dict[str, str], daemons: list[Daemon]
) -> None:
    run = tmp_path / "run"
    first_dir = checkout(tmp_path, "kissbot", ["first_bot"])
    second_dir = checkout(tmp_path, "kissbot2", ["second_bot"])
    first = Daemon(first_dir, env, "--runtime-dir", str(run))
    daemons.append(first)
    first.log.wait_for(r"first_bot: ready")
    notify = (run / "notify.sock").stat().st_ino
    # Another control socket, as "another supervisor is already listening" advised.
    second = Daemon(second_dir, env, "--runtime-dir", str(run), "--control-socket", "ctl.sock")
    daemons.append(second)
    assert second.proc.wait(TIMEOUT) == 1
    second.log.wait_for(
        rf"kissbot-supervisor: another supervisor \(PID {first.proc.pid}, workdir "
        rf"{first_dir}\) uses the runtime directory {run}: .* give this one a runtime "
        r"directory of its own"
    )
    assert (run / "notify.sock").stat().st_ino == notify
    assert not (second_dir / "ctl.sock").exists()
    assert ctl(env, tmp_path, "--socket", str(run / "control.sock"), "status").returncode == 0
