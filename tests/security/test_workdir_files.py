"""The bots' user owns the workdir: what it plants there must not hang, fool or
serve the root supervisor (runtime/fs.py's rule). Each attack runs as that user."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fixtures.kissbot_db import KissbotDb, write_key_file
from process.harness import SUPERVISOR, TIMEOUT, fleet_config, write_config

from .conftest import StartFleet, as_bots_user, give_to_bots_user, write_settings


@pytest.fixture
def root_secret(tmp_path: Path) -> Path:
    """A root-only file outside the workdir, for symlinks to point at."""
    secret = tmp_path / "root-only"
    secret.write_text("root's own line\n")
    secret.chmod(0o600)
    return secret


def test_a_fifo_or_symlink_as_the_config_never_hangs_nor_reads_another_file(
    start_fleet: StartFleet, workdir: Path, root_secret: Path
) -> None:
    sup = start_fleet(fleet_config(["fifo_chan"]))
    sup.wait_for(r"fifo_chan: ready")
    as_bots_user("mv config/config.yaml config/old.yaml && mkfifo config/config.yaml", workdir)
    refused = sup.request({"cmd": "reload"})  # the old supervisor blocked here for ever
    assert refused["ok"] is False
    assert "config/config.yaml" in refused["error"]
    assert "FIFO" in refused["error"]
    as_bots_user(f"rm config/config.yaml && ln -s {root_secret} config/config.yaml", workdir)
    refused = sup.request({"cmd": "reload"})
    assert refused["ok"] is False
    assert "cannot be read" in refused["error"]  # not parsed: root's file stays unread
    assert "root's own line" not in refused["error"]
    assert sup.bot("fifo_chan")["state"] == "running"


def test_pids_swapped_for_a_symlink_writes_nothing_through_it(
    start_fleet: StartFleet, workdir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "root-dir"
    target.mkdir()
    (workdir / "pids").mkdir()
    give_to_bots_user(workdir)
    as_bots_user(f"rmdir pids && ln -s {target} pids", workdir)
    sup = start_fleet(fleet_config(["swapped_chan"]), give=False)
    sup.wait_for(r"swapped_chan: could not start")
    sup.wait_for(r"supervisor: cannot write .*supervisor\.pid")
    assert sup.status()["bots"][0]["pid"] is None
    assert list(target.iterdir()) == []  # no pid file, no lock, no temp file in root's dir


def test_symlinks_as_a_bots_log_and_lock_reach_no_other_file(
    start_fleet: StartFleet, workdir: Path, root_secret: Path
) -> None:
    before = root_secret.read_bytes()
    (workdir / "pids").mkdir()
    (workdir / "logs" / "supervisor").mkdir(parents=True)
    give_to_bots_user(workdir)
    as_bots_user(
        f"ln -s {root_secret} logs/supervisor/log_chan.log && "
        f"ln -s {root_secret} pids/lock_chan.lock",
        workdir,
    )
    sup = start_fleet(fleet_config(["log_chan", "lock_chan"]), give=False)
    sup.wait_for(r"log_chan: cannot open .*log_chan\.log")
    sup.wait_for(r"log_chan: ready")  # its output is dropped, the bot runs
    sup.wait_for(r"lock_chan: could not start")
    assert sup.bot("lock_chan")["pid"] is None
    assert root_secret.read_bytes() == before  # nothing appended, nothing truncated


def test_a_fifo_as_the_fernet_key_ends_the_start_with_a_sentence(workdir: Path) -> None:
    doc = fleet_config(["key_chan"], supervisor={"use_db": True})
    settings = write_settings(workdir.parent / "etc", doc.pop("supervisor"))
    write_config(workdir, doc)
    KissbotDb.create(workdir / "kissbot.db", key=write_key_file(workdir))
    give_to_bots_user(workdir)
    as_bots_user("rm .kissbot.key && mkfifo .kissbot.key", workdir)
    result = subprocess.run(
        [SUPERVISOR, "--workdir", str(workdir), "--runtime-dir", str(workdir.parent / "run"),
         "--settings", str(settings), "--non-interactive"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert ".kissbot.key" in result.stderr
    assert "FIFO" in result.stderr


def test_a_fifo_as_the_token_db_never_hangs_the_supervisor(
    start_fleet: StartFleet, workdir: Path
) -> None:
    write_key_file(workdir)
    (workdir / "kissbot.db").touch()
    give_to_bots_user(workdir)
    as_bots_user("rm kissbot.db && mkfifo kissbot.db", workdir)
    sup = start_fleet(fleet_config(["db_chan"], supervisor={"use_db": True}), give=False)
    # The old supervisor opened it to read its header, and blocked there for ever.
    sup.wait_for(r"tokens: cannot read token states \(.*kissbot\.db: is a FIFO")
    assert sup.status()["bots"][0]["channel"] == "db_chan"  # it answers


def test_logs_swapped_for_a_symlink_makes_no_directory_through_it(
    start_fleet: StartFleet, workdir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "root-dir"
    target.mkdir()
    give_to_bots_user(workdir)
    as_bots_user(f"ln -s {target} logs", workdir)
    sup = start_fleet(fleet_config(["dirless_chan"]), give=False)
    sup.wait_for(r"dirless_chan: cannot open .*dirless_chan\.log")
    sup.wait_for(r"dirless_chan: ready")  # its output is dropped, the bot runs
    # The supervisor made no logs/supervisor/ in it. (The demo bot runs as root here
    # and writes its own logs/broadcast/ there: as the bots' user it could not.)
    assert not (target / "supervisor").exists()
