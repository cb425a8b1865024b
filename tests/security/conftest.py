"""Attacks run as the bots' user (``setpriv``) on a workdir it owns, against a root supervisor."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from process.harness import Supervisor, write_config

# The bots' user in these tests: it owns the KissBot checkout, as in production.
BOTS_UID = 65534

StartFleet = Callable[..., Supervisor]


def as_bots_user(script: str, cwd: Path) -> None:
    """Run ``sh -c script`` as the bots' user, with no group of root's."""
    subprocess.run(
        ["setpriv", f"--reuid={BOTS_UID}", f"--regid={BOTS_UID}", "--clear-groups",
         "sh", "-euc", script],
        cwd=cwd, check=True, capture_output=True, timeout=20,
    )  # fmt: skip


def give_to_bots_user(workdir: Path) -> None:
    """The checkout and everything in it belong to the bots' user."""
    for root, dirs, files in os.walk(workdir):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), BOTS_UID, BOTS_UID, follow_symlinks=False)
    os.chown(workdir, BOTS_UID, BOTS_UID)


def write_settings(directory: Path, section: dict[str, Any]) -> Path:
    """A settings file of root's, as /etc/kissbot-supervisor/supervisor.yaml is."""
    directory.mkdir(mode=0o755, exist_ok=True)
    path = directory / "supervisor.yaml"
    path.write_text(yaml.safe_dump({"supervisor": section}, sort_keys=False))
    path.chmod(0o644)
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A workdir the bots' user can reach: pytest's tmp dirs are 0700 root's."""
    for top in (tmp_path, *tmp_path.parents):
        if top.stat().st_uid == 0 and not top.stat().st_mode & 0o001:
            top.chmod(top.stat().st_mode | 0o711)
        if top.name.startswith("pytest-of-"):
            break
    wd = tmp_path / "kissbot"
    wd.mkdir()
    return wd


@pytest.fixture
def start_fleet(workdir: Path) -> Iterator[Callable[[dict[str, Any]], Supervisor]]:
    running: list[Supervisor] = []

    def start(doc: dict[str, Any], *, give: bool = True) -> Supervisor:
        """The supervisor's settings in a root-owned file outside the checkout, KissBot's
        config in the checkout: the production layout (docs/security.md)."""
        doc = dict(doc)
        settings = write_settings(workdir.parent / "etc", doc.pop("supervisor", {}))
        write_config(workdir, doc)
        if give:
            give_to_bots_user(workdir)
        sup = Supervisor(workdir, ("--settings", str(settings)), workdir.parent / "run")
        running.append(sup)
        return sup

    yield start
    for sup in running:
        sup.stop()
