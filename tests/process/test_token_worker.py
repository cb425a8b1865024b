"""DB mode on a live native fleet, with the token worker (tokens/worker.py): a real
KissBot DB and key, decryption in a child only, never in the daemon."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from fixtures.kissbot_db import KissbotDb, new_key, write_key_file
from linewatch import wait_until

from .conftest import StartFleet
from .harness import fleet_config

SECRET = "oauth-worker-secret-3c9e"


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _token_db(workdir: Path) -> bytes:
    """kissbot.db with the bot's token, and its key in .kissbot.key; the key."""
    key = write_key_file(workdir)
    KissbotDb.create(workdir / "kissbot.db", key=key).add_account(
        "serda_bot", "1001", SECRET, expires_at=time.time() + 86_400
    )
    return key


def test_a_wrong_key_holds_the_bots_back_without_a_credential_asked_for(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    key = _token_db(tmp_path)
    write_key_file(tmp_path, new_key())  # a key, but not the tokens' one
    sup = start_fleet(fleet_config(["wrong_one", "wrong_two"], supervisor={"use_db": True}))
    sup.wait_for(r"wrong_one: not started: the bot token cannot be decrypted")
    bot = sup.bot("wrong_one")
    assert (bot["state"], bot["token_state"], bot["pid"]) == ("stopped", "undecryptable", None)
    assert ".kissbot.key" in bot["reason"]
    # The right key back: the bots start by themselves, no credential file made.
    write_key_file(tmp_path, key)
    sup.wait_for(r"wrong_one: ready")
    sup.wait_for(r"wrong_two: ready")
    environ = Path(f"/proc/{sup.bot('wrong_one')['pid']}/environ").read_bytes()
    assert b"CREDENTIALS_DIRECTORY=" not in environ
    assert "cryptography" not in _maps(sup.proc.pid)
    assert "sqlite" not in _maps(sup.proc.pid)
    assert not any(SECRET in line for line in sup.lines)


def test_a_fifo_for_a_key_is_refused_and_hangs_nothing(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    _token_db(tmp_path)
    doc = fleet_config(["fifo_one"], supervisor={"use_db": True, "bot": {"credential": True}})
    sup = start_fleet(doc)
    sup.wait_for(r"fifo_one: ready")
    (tmp_path / ".kissbot.key").unlink()
    os.mkfifo(tmp_path / ".kissbot.key", 0o600)  # a bot's user could plant one
    mark = sup.mark()
    assert sup.ctl("restart", "fifo_one").returncode != 0
    sup.wait_for(r"fifo_one: .*\.kissbot\.key", since=mark)
    wait_until(
        lambda: sup.bot("fifo_one")["token_state"] == "undecryptable",
        what="fifo_one held back",
    )
    assert sup.status()["bots"][0]["pid"] is None  # the daemon answers: nothing hangs


def test_the_worker_leaves_no_core_dump() -> None:
    probe = (
        "import resource, ctypes\n"
        "from kissbot_supervisor.tokens.worker import _no_core_dumps\n"
        "_no_core_dumps()\n"
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), resource.getrlimit(resource.RLIMIT_CORE))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert out.split() == ["0", "(0,", "0)"]  # PR_GET_DUMPABLE, RLIMIT_CORE
