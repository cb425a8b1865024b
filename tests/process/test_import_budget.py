"""The resident daemon's imports held to their budget (tests/import_budget.py),
on the native backend, in YAML token mode and in DB mode."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fixtures.kissbot_db import KissbotDb, write_key_file
from import_budget import (
    DB,
    DECRYPTION,
    NATIVE,
    NATIVE_HUB_DB,
    NATIVE_NEVER_OURS,
    imported,
    over_budget,
)
from linewatch import wait_until

from .harness import Supervisor, fleet_config, write_config


def drive(
    sup: Supervisor,
    channels: list[str],
    workdir: Path,
    doc: dict[str, Any],
    before_stop: Callable[[], None] = lambda: None,
) -> None:
    """Every path of a day: start-up, status, metrics, a reload adding a bot, a
    restart, a crash and its restart, then ``before_stop``, the stop."""
    for channel in channels:
        sup.wait_for(rf"{channel}: ready")
    assert sup.request({"cmd": "status"})["ok"]
    assert sup.request({"cmd": "metrics"})["ok"]
    doc["twitch"]["channels"].append("budget_late")
    write_config(workdir, doc)
    response = sup.request({"cmd": "reload"})
    assert response["ok"], response
    sup.wait_for(r"budget_late: ready")
    mark = sup.mark()
    assert sup.request({"cmd": "restart", "names": [channels[0]]})["ok"]
    sup.wait_for(rf"{channels[0]}: ready", since=mark)
    mark = sup.mark()
    os.kill(sup.bot(channels[1])["pid"], signal.SIGKILL)
    sup.wait_for(rf"{channels[1]}: ready", since=mark)
    before_stop()
    assert sup.stop() == 0


def run_with_importtime(workdir: Path, doc: dict[str, Any]) -> Supervisor:
    write_config(workdir, doc)
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    return Supervisor(workdir, env=env)


@pytest.mark.slow
def test_native_yaml_mode_stays_within_its_import_budget(tmp_path: Path) -> None:
    channels = ["budget_one", "budget_two"]
    doc = fleet_config(channels, hub=True, supervisor={"bot": {"watchdog_sec": 5}})
    sup = run_with_importtime(tmp_path, doc)
    sup.wait_for(r"hub: ready")
    drive(sup, channels, tmp_path, doc)
    modules = imported(sup.lines)
    assert "kissbot_supervisor.daemon.supervisor" in modules  # the lines were the daemon's
    problems = over_budget(modules, NATIVE, NATIVE_NEVER_OURS)
    assert not problems, "\n".join(problems)


def mapped_files(pid: int) -> set[str]:
    """The files mapped into ``pid``: shared libraries and extension modules."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {parts[5] for line in lines if len(parts := line.split()) > 5}


@pytest.mark.slow
@pytest.mark.parametrize("credential", [False, True], ids=["no-credential", "credential"])
def test_native_db_mode_stays_within_its_import_budget(tmp_path: Path, credential: bool) -> None:
    """DB mode as YAML mode: the token states are read, the token is checked (a wrong
    key would hold the bots back) and, for bots that ask for it, written to their
    credential file, all by the token worker; the daemon never loads sqlite3 or
    cryptography nor maps their libraries."""
    key = write_key_file(tmp_path)
    db = KissbotDb.create(tmp_path / "kissbot.db", key=key)
    db.add_account("serda_bot", "1001", "budget-secret-1", expires_at=time.time() + 86_400)
    channels = ["budget_one", "budget_two"]
    doc = fleet_config(channels, supervisor={"use_db": True, "bot": {"credential": credential}})
    sup = run_with_importtime(tmp_path, doc)
    logs = tmp_path / "logs" / "supervisor"

    def decrypted_and_never_mapped() -> None:
        if credential:  # the child decrypted: every bot read its token
            wait_until(
                lambda: all(
                    "credential: token present (15 bytes)" in (logs / f"{c}.log").read_text()
                    for c in (*channels, "budget_late")
                ),
                what="every bot read its credential",
            )
        mapped = mapped_files(sup.proc.pid)
        libraries = ("cryptography", "libcrypto", "_cffi_backend", "sqlite")
        crypto = sorted(f for f in mapped if any(lib in f for lib in libraries))
        assert not crypto, f"the daemon maps {crypto}"

    drive(sup, channels, tmp_path, doc, decrypted_and_never_mapped)
    modules = imported(sup.lines)
    assert "kissbot_supervisor.tokens.worker" in modules  # DB mode really ran
    loaded = sorted(m for m in modules if m.split(".")[0] in DECRYPTION)
    assert not loaded, f"the daemon loaded {loaded}"
    problems = over_budget(modules, DB, NATIVE_NEVER_OURS)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_native_yaml_mode_with_the_hubs_db_stays_within_its_budget(tmp_path: Path) -> None:
    db = KissbotDb.create(tmp_path / "kissbot.db")  # no key file: nothing is decrypted
    db.add_account(
        "el_serda", "2002", "caster", expires_at=time.time() + 86_400, token_type="broadcaster"
    )
    channels = ["budget_one", "budget_two"]
    doc = fleet_config(channels, hub=True, supervisor={"hub": {"ready": "db"}})
    sup = run_with_importtime(tmp_path, doc)
    sup.wait_for(r"hub: ready")
    assert sup.status()["hub"]["token_state"] == "valid"  # read from the DB
    drive(sup, channels, tmp_path, doc)
    modules = imported(sup.lines)
    assert "kissbot_supervisor.tokens.worker" in modules  # the hub's token, from the DB
    problems = over_budget(modules, NATIVE_HUB_DB, NATIVE_NEVER_OURS)
    assert not problems, "\n".join(problems)
