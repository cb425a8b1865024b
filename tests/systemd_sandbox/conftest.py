"""Fixtures: one real systemd system manager per test session (see sandbox.py).

``systemd_sandbox`` (session) boots it once; ``clean_units`` (function) yields the
same sandbox and, after the test, stops every ``kissbot-*`` unit, removes the
unit files the test installed and resets failed units.

Availability: a machine that cannot boot the sandbox (not root, no ``unshare`` or
``nsenter``, no /lib/systemd/systemd, or the boot itself fails) SKIPS the tests
that use it, and the terminal summary says so. With ``CI=true`` on a root
machine with ``unshare``, the same failure is an ERROR: CI must prove it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from .fleet import Fleet, install_supervisor
from .sandbox import SandboxError, SystemdSandbox, unavailable_reason

SKIP_PREFIX = "systemd sandbox not available"


@dataclasses.dataclass
class SandboxStatus:
    """What the session's sandbox did, for the terminal summary."""

    used: bool = False
    booted: bool = False
    reason: str = ""
    version: str = ""
    boot_seconds: float | None = None
    stop_seconds: float | None = None
    leftovers_removed: list[Path] = dataclasses.field(default_factory=list)


STATUS_KEY = pytest.StashKey[SandboxStatus]()


def _required() -> bool:
    """On CI, a root machine with unshare must boot the sandbox: fail, don't skip."""
    on_ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return on_ci and os.geteuid() == 0 and shutil.which("unshare") is not None


def _unavailable(status: SandboxStatus, reason: str) -> NoReturn:
    status.reason = reason
    if _required():
        pytest.fail(f"systemd sandbox failed on CI (CI=true, root, unshare present): {reason}")
    # The first line: a boot error goes on with the console and journal tails.
    pytest.skip(f"{SKIP_PREFIX}: {reason.splitlines()[0]}")


def _binds(basetemp: Path) -> list[Path]:
    """What the tests need inside: pytest's tmp dirs, and the checkout and the venv
    when they live under /tmp (a CI clone may), which the sandbox covers with tmpfs."""
    binds = [basetemp]
    repo = Path(__file__).resolve().parents[2]
    for path in (repo, Path(sys.prefix).resolve()):
        if path.is_relative_to("/tmp") and not any(path.is_relative_to(b) for b in binds):
            binds.append(path)
    return binds


@pytest.fixture(scope="session")
def systemd_sandbox(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SystemdSandbox]:
    """A booted systemd 252 system manager in its own PID + mount + UTS namespace.

    pytest's basetemp is re-bound inside, so ``tmp_path`` dirs are visible to
    commands run with ``sandbox.run(...)`` and to units. Stopped (and checked to
    leave no cgroup behind) at the end of the session.
    """
    status = request.config.stash.setdefault(STATUS_KEY, SandboxStatus())
    status.used = True
    reason = unavailable_reason()
    if reason is not None:
        _unavailable(status, reason)
    status.leftovers_removed = SystemdSandbox.cleanup_leftovers()
    sandbox = SystemdSandbox()
    try:
        sandbox.start(binds=_binds(tmp_path_factory.getbasetemp()))
    except SandboxError as exc:  # start() has already cleaned up after itself
        _unavailable(status, str(exc))
    status.booted = True
    status.boot_seconds = sandbox.boot_seconds
    try:
        status.version = sandbox.version
        yield sandbox
    finally:
        sandbox.stop()
        status.stop_seconds = sandbox.stop_seconds


@pytest.fixture
def clean_units(systemd_sandbox: SystemdSandbox) -> Iterator[SystemdSandbox]:
    """The session sandbox, tidied after the test: no kissbot-* unit survives it.

    Stops every ``kissbot-*`` unit, removes what the test added to
    ``units_dir`` (then daemon-reload) and resets every failed unit, so that a
    transient unit name (or a template file, which blocks transient instances
    of the same name) does not leak into the next test.
    """
    sandbox = systemd_sandbox
    before = set(os.listdir(sandbox.units_dir))
    yield sandbox
    sandbox.systemctl("stop", "kissbot-*")
    added = set(os.listdir(sandbox.units_dir)) - before
    for name in sorted(added):
        path = sandbox.units_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if added:
        sandbox.daemon_reload()
    sandbox.systemctl("reset-failed")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    status = terminalreporter.config.stash.get(STATUS_KEY, None)
    if status is None or not status.used:
        return
    terminalreporter.section("systemd sandbox", sep="-")
    if status.booted:
        boot = f"{status.boot_seconds:.2f}" if status.boot_seconds is not None else "?"
        line = f"systemd sandbox: booted {status.version} in {boot} s"
        if status.stop_seconds is not None:
            line += f", stopped in {status.stop_seconds:.2f} s"
        if status.leftovers_removed:
            line += f" (removed {len(status.leftovers_removed)} leftovers of killed runs)"
        terminalreporter.write_line(line, green=True)
        return
    skipped = sum(
        SKIP_PREFIX in str(report.longrepr) for report in terminalreporter.stats.get("skipped", [])
    )
    reason = status.reason.splitlines()[0] if status.reason else "unknown reason"
    terminalreporter.write_line(
        f"systemd sandbox: NOT AVAILABLE ({reason}) — {skipped} systemd tests skipped",
        yellow=True,
        bold=True,
    )


@pytest.fixture
def fleet(clean_units: SystemdSandbox, tmp_path: Path) -> Iterator[Fleet]:
    sandbox = clean_units
    workdir = tmp_path / "kissbot"
    workdir.mkdir()
    install_supervisor(sandbox, workdir)
    f = Fleet(sandbox, workdir)
    try:
        yield f
    finally:
        sandbox.systemctl("stop", "kissbot-supervisor", check=False)
        f.journal.close()
