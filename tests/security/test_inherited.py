"""What the supervisor inherited is not the bots' to have."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures.fleet_tokens import add_tokens
from process.harness import Supervisor, check_preload, fleet_config, write_config


@pytest.mark.parametrize("preload", [False, True], ids=["exec", "preload"])
def test_a_descriptor_the_supervisor_inherited_never_reaches_a_bot(
    workdir: Path, tmp_path: Path, preload: bool
) -> None:
    secret = tmp_path / "inherited-secret"
    secret.write_text("not for bots\n")
    write_config(workdir, fleet_config(["fd_chan"], preload=preload))
    # The caller leaves fd 7 open (no O_CLOEXEC) on a file of its own, then execs
    # the supervisor in place (same PID).
    wrapper = ["sh", "-c", 'exec 7<"$0"; exec "$@"', str(secret)]
    sup = Supervisor(workdir, (), workdir.parent / "run", wrapper=wrapper)
    try:
        pid = int(sup.wait_for(r"fd_chan: started \(PID (\d+)\)").group(1))
        sup.wait_for(r"fd_chan: ready")
        check_preload(sup, preload)  # forked from the fork server, which never had it
        mine = os.readlink(f"/proc/{sup.proc.pid}/fd/7")
        assert mine == str(secret)  # the supervisor did get it
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert str(secret) not in targets
    finally:
        sup.stop()


def test_token_files_a_killed_supervisor_left_are_gone_at_the_next_start(workdir: Path) -> None:
    runtime = workdir.parent / "run"
    doc = add_tokens(fleet_config(["kept_chan", "gone_chan"]), workdir, "yaml")
    write_config(workdir, doc)
    first = Supervisor(workdir, (), runtime)
    try:
        first.wait_for(r"gone_chan: ready")
        first.wait_for(r"kept_chan: ready")
        left = runtime / "credentials" / "gone_chan" / "token"
        assert left.exists()
        first.proc.kill()  # no clean-up runs; the bots die with it (PR_SET_PDEATHSIG)
        first.proc.wait()
        assert left.exists()
    finally:
        first.stop()
    doc["twitch"]["channels"] = ["kept_chan"]
    write_config(workdir, doc)
    second = Supervisor(workdir, (), runtime)
    try:
        second.wait_for(r"kept_chan: ready")
        assert not (runtime / "credentials" / "gone_chan").exists()
    finally:
        second.stop()
