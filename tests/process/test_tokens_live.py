"""Token states from a real KissBot SQLite DB, with Fernet-encrypted tokens, on a live fleet."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from contextlib import closing
from pathlib import Path

from fixtures.kissbot_db import KissbotDb, format_expires, write_key_file
from linewatch import wait_until

from .conftest import StartFleet
from .harness import SUPERVISOR, fleet_config, write_config

SECRET = "oauth-secret-access-token-7f3a9c"


def _db_fleet(
    tmp_path: Path, *, status: str = "valid", credential: bool = False
) -> tuple[KissbotDb, dict[str, object]]:
    key = write_key_file(tmp_path)
    db = KissbotDb.create(tmp_path / "kissbot.db", key=key)
    db.add_account(
        "serda_bot",
        "1001",
        SECRET,
        expires_at=time.time() + 86_400,
        status=status,  # type: ignore[arg-type]
    )
    supervisor = {"use_db": True, "bot": {"credential": credential}}
    return db, fleet_config(["token_bot", "token_two"], supervisor=supervisor)


def test_revoked_token_keeps_bots_from_starting_until_fixed(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    db, doc = _db_fleet(tmp_path, status="revoked")
    sup = start_fleet(doc)
    sup.wait_for(r"token_bot: not started: .*revoked")
    status = sup.status()
    for bot in status["bots"]:
        assert bot["state"] == "stopped"
        assert bot["token_state"] == "revoked"
        assert "revoked" in bot["reason"]
        assert bot["pid"] is None
    assert sup.ctl("status").returncode == 3
    # KissBot re-authorises: the DB changes, the bots start without a reload.
    with closing(db.connect()) as conn:
        conn.execute("UPDATE oauth_tokens SET status = 'valid'")
    sup.wait_for(r"token_bot: ready")
    sup.wait_for(r"token_two: ready")
    assert sup.bot("token_bot")["token_state"] == "valid"


def test_token_is_handed_over_as_a_credential_file_and_nowhere_else(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    _db, doc = _db_fleet(tmp_path, credential=True)
    sup = start_fleet(doc)
    sup.wait_for(r"token_bot: ready")
    pid = sup.bot("token_bot")["pid"]
    logs = tmp_path / "logs" / "supervisor"
    wait_until(
        lambda: "credential: token present (32 bytes)" in (logs / "token_bot.log").read_text(),
        what="the bot read its credential",
    )
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    creds_dir = next(
        v.split(b"=", 1)[1].decode()
        for v in environ.split(b"\0")
        if v.startswith(b"CREDENTIALS_DIRECTORY=")
    )
    token_file = Path(creds_dir) / "token"
    assert token_file.read_text() == SECRET
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert Path(creds_dir).stat().st_mode & 0o777 == 0o700
    # Never in argv, environment, status, logs.
    assert SECRET.encode() not in environ
    assert SECRET.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert SECRET not in str(sup.request({"cmd": "status"}))
    assert SECRET not in sup.ctl("status", "--json").stdout
    assert not any(SECRET in line for line in sup.lines)
    for log in logs.iterdir():
        assert SECRET not in log.read_text()
    # Removed when the process stops.
    assert sup.ctl("stop", "token_bot").returncode == 0
    assert not token_file.exists()
    assert not Path(creds_dir).exists()


def test_missing_key_file_is_an_error_and_no_key_is_made(tmp_path: Path) -> None:
    KissbotDb.create(tmp_path / "kissbot.db")
    write_config(tmp_path, fleet_config(["token_bot"], supervisor={"use_db": True}))
    result = subprocess.run(
        [SUPERVISOR, "--workdir", str(tmp_path), "--non-interactive"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert ".kissbot.key" in result.stderr
    assert not (tmp_path / ".kissbot.key").exists()
    assert not (tmp_path / "pids").exists()


def test_expiring_token_is_shown_but_starts(start_fleet: StartFleet, tmp_path: Path) -> None:
    key = write_key_file(tmp_path)
    db = KissbotDb.create(tmp_path / "kissbot.db", key=key)
    db.add_account("serda_bot", "1001", SECRET, expires_at=format_expires(time.time() + 600))
    sup = start_fleet(fleet_config(["soon_bot"], supervisor={"use_db": True}))
    sup.wait_for(r"soon_bot: ready")
    assert sup.bot("soon_bot")["token_state"] == "expiring"


def test_supervisor_speaks_sd_notify_to_its_own_manager(tmp_path: Path) -> None:
    from .harness import Supervisor

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(path))
        manager.settimeout(20)
        write_config(tmp_path, fleet_config(["notified_one", "notified_two"], hub=True))
        env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
        sup = Supervisor(tmp_path, env=env)
        try:
            seen: list[str] = []
            while not any(m == "STATUS=2/2 bots running, hub ready" for m in seen):
                seen += manager.recv(4096).decode().split("\n")
            assert "READY=1" in seen
            while "WATCHDOG=1" not in seen:
                seen += manager.recv(4096).decode().split("\n")
            sup.signal(15)
            while "STOPPING=1" not in seen:
                seen += manager.recv(4096).decode().split("\n")
        finally:
            sup.stop()
