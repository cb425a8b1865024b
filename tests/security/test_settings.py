"""The supervisor's settings choose what runs and as whom: the bots' user, who owns
KissBot's config, must not be able to choose them (config/load.py, docs/security.md)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import yaml

from linewatch import wait_until
from process.harness import SUPERVISOR, TIMEOUT, fleet_config, write_config

from .conftest import BOTS_UID, StartFleet, as_bots_user, give_to_bots_user, write_settings


def attacker_section(marker: Path) -> dict[str, object]:
    """What a taken-over bot would write: commands of its own, run by root."""
    touch = ["sh", "-c", f"id -u > {marker}"]
    return {
        "backend": "native",
        "on_failure": touch,
        "bot": {"command": touch, "ready": "none"},
    }


def run_check(workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SUPERVISOR, "--workdir", str(workdir), "--check-config", *extra],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip


def test_settings_in_a_checkout_the_bots_user_owns_are_refused(
    workdir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran-as-root"
    doc = fleet_config(["owned_chan"])
    doc["supervisor"] = attacker_section(marker)
    write_config(workdir, doc)
    give_to_bots_user(workdir)
    # Even a config file of root's: its directory is the bots' user's, who can swap it.
    os.chown(workdir / "config" / "config.yaml", 0, 0)
    result = subprocess.run(
        [SUPERVISOR, "--workdir", str(workdir), "--runtime-dir", str(tmp_path / "run"),
         "--non-interactive"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "config/config.yaml: supervisor:" in result.stderr
    assert f"UID {BOTS_UID}" in result.stderr
    assert "--settings" in result.stderr  # what to do
    assert not marker.exists()
    assert run_check(workdir).returncode == 2


def test_the_bots_user_rewriting_the_config_chooses_nothing_that_runs(
    start_fleet: StartFleet, workdir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran-as-root"
    hooked = tmp_path / "root-hook-ran"
    # Settings in root's file, with a hook of root's choosing.
    sup = start_fleet(
        fleet_config(["steady_chan"], supervisor={"on_failure": ["touch", str(hooked)]})
    )
    sup.wait_for(r"steady_chan: ready")
    # The attack: a config directory of its own, with a supervisor: section.
    evil = {
        "twitch": {"channels": ["steady_chan", "new_chan"]},
        "supervisor": attacker_section(marker),
    }
    as_bots_user(
        "mv config config.old && mkdir config && cat > config/config.yaml <<'EOF'\n"
        f"{yaml.safe_dump(evil)}EOF",
        workdir,
    )
    answer = sup.request({"cmd": "reload"})
    assert answer["ok"] is True, answer
    assert answer["changes"]["added"] == ["new_chan"]  # KissBot's part is KissBot's
    sup.wait_for(r"config/config\.yaml: the 'supervisor:' section is ignored")
    sup.wait_for(r"new_chan: ready")  # the demo bot, from root's settings
    os.kill(sup.bot("new_chan")["pid"], signal.SIGKILL)  # a failure: the hook runs
    wait_until(hooked.exists, what="root's on_failure hook")
    assert not marker.exists()  # neither the bots' user's hook nor its bot command ran


def test_a_settings_file_others_can_write_is_refused(workdir: Path, tmp_path: Path) -> None:
    doc = fleet_config(["file_chan"])
    settings = write_settings(tmp_path / "etc", doc.pop("supervisor"))
    write_config(workdir, doc)
    assert run_check(workdir, "--settings", str(settings)).returncode == 0
    for owner, mode, expected in (
        (BOTS_UID, 0o644, f"belongs to .*UID {BOTS_UID}"),
        (0, 0o664, "is writable by the group"),
        (0, 0o646, "is writable by everyone"),
    ):
        os.chown(settings, owner, 0)
        settings.chmod(mode)
        result = run_check(workdir, "--settings", str(settings))
        assert result.returncode == 2, (owner, mode)
        assert f"{settings}: not used:" in result.stderr
        assert re.search(expected, result.stderr), result.stderr
    # Its directory counts as much as the file: the bots' user could swap the file.
    os.chown(settings, 0, 0)
    settings.chmod(0o644)
    os.chown(settings.parent, BOTS_UID, BOTS_UID)
    result = run_check(workdir, "--settings", str(settings))
    assert result.returncode == 2
    assert f"its directory {settings.parent} belongs to" in result.stderr


def test_a_sticky_directory_on_the_way_is_no_reason_to_refuse(
    workdir: Path, tmp_path: Path
) -> None:
    # /tmp is 1777: others may create names there, not rename or remove ours.
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    doc = fleet_config(["sticky_chan"])
    settings = write_settings(sticky / "etc", doc.pop("supervisor"))
    write_config(workdir, doc)
    result = run_check(workdir, "--settings", str(settings))
    assert result.returncode == 0, result.stderr
    assert f"{settings}: OK" in result.stdout
