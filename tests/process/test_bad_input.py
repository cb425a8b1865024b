"""Bad input to a running supervisor: the control socket, the config on reload, the token DB.

Every case ends the same way: a clear answer (or a clear log line), and the
running fleet untouched (the same PIDs, every bot running). The DB cases also
check that the supervisor writes nothing where KissBot keeps its files.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fixtures.kissbot_db import KissbotDb, new_key, write_key_file
from kissbot_supervisor.protocol import MAX_LINE, ProtocolError, parse_request
from linewatch import wait_until

from .conftest import StartFleet
from .harness import TIMEOUT, Supervisor, fleet_config, write_config

SECRET = "oauth-bad-input-token-5e1d77"


def pids(sup: Supervisor) -> dict[str, int | None]:
    status = sup.status()
    out: dict[str, int | None] = {b["channel"]: b["pid"] for b in status["bots"]}
    if status["hub"] is not None:
        out["hub"] = status["hub"]["pid"]
    return out


def all_running(sup: Supervisor) -> bool:
    status = sup.status()
    procs = status["bots"] + ([status["hub"]] if status["hub"] else [])
    return all(p["state"] == "running" for p in procs)


# --- the control socket ---------------------------------------------------------------


def converse(
    path: Path,
    payload: bytes,
    *,
    answers: int | None = None,
    shut_wr: bool = False,
    then: tuple[threading.Event, bytes] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Send ``payload``; read ``answers`` lines (or until the server hangs up).

    Returns the decoded answers and whether the server closed the connection.
    ``then``: once the event is set, send more and read one more answer.
    """
    lines: list[dict[str, Any]] = []
    closed = False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(str(path))
        with contextlib.suppress(BrokenPipeError):  # dropped while sending an oversized line
            s.sendall(payload)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        buf = b""

        def read_until(count: int | None) -> None:
            nonlocal buf, closed
            while count is None or len(lines) < count:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    lines.append(json.loads(line))
                if count is not None and len(lines) >= count:
                    return
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    closed = True
                    return
                buf += chunk

        read_until(answers)
        if then is not None:
            event, more = then
            assert event.wait(TIMEOUT)
            s.sendall(more)
            read_until(len(lines) + 1)
    return lines, closed


GARBAGE_LINES = [
    b"not json",
    b"{",
    b"[]",
    b"null",
    b'{"cmd":"nope"}',
    b'{"cmd":"status","extra":1}',
    b'{"cmd":"start"}',
    b'{"cmd":"start","names":[]}',
    b'{"cmd":"stop","names":["nobody_here"]}',
    b'{"cmd":"stop","names":[["all"]]}',
    b'{"cmd":"status","names":["all"]}',
    b"\xff\xfe\xfd",
    b'{"cmd":"status"}\x00',
    b"[" * 30_000,
    b'{"a":' * 5_000,
    b"",
    b" \t ",
]


def test_garbage_from_many_clients_is_answered_and_changes_nothing(
    start_fleet: StartFleet,
) -> None:
    sup = start_fleet(fleet_config(["garbage_one", "garbage_two"], hub=True))
    sup.wait_for(r"garbage_one: ready")
    sup.wait_for(r"garbage_two: ready")
    wait_until(lambda: all_running(sup), what="the fleet running")
    before = pids(sup)
    path = sup.control
    release = threading.Event()
    results: dict[str, tuple[list[dict[str, Any]], bool]] = {}
    clients: dict[str, Callable[[], tuple[list[dict[str, Any]], bool]]] = {
        # Every line answered with one error, in order, on one connection.
        "pipelined": lambda: converse(
            path, b"\n".join(GARBAGE_LINES) + b"\n", answers=len(GARBAGE_LINES)
        ),
        # No newline ever: refused past MAX_LINE and dropped.
        "endless": lambda: converse(path, b"x" * (MAX_LINE + 10)),
        "endless-json": lambda: converse(path, b'{"cmd":"status","names":["' + b"a" * 3 * MAX_LINE),
        # A partial line, then nothing: it must not hold anyone else up; its
        # request is answered once it is complete.
        "slow": lambda: converse(path, b'{"cmd":', answers=0, then=(release, b'"status"}\n')),
        # A partial line and a half-close: dropped without an answer.
        "half-closed": lambda: converse(path, b'{"cmd":"sta', shut_wr=True),
    }
    threads = [
        threading.Thread(target=lambda n=n, c=c: results.__setitem__(n, c()), daemon=True)
        for n, c in clients.items()
    ]
    for t in threads:
        t.start()
    for name in ("pipelined", "endless", "endless-json", "half-closed"):
        wait_until(lambda name=name: name in results, what=f"client {name} done")  # type: ignore[misc]
    release.set()
    for t in threads:
        t.join(TIMEOUT)

    answers, _closed = results["pipelined"]
    assert len(answers) == len(GARBAGE_LINES)
    for line, answer in zip(GARBAGE_LINES, answers, strict=True):
        assert answer["ok"] is False, (line[:40], answer)
        assert isinstance(answer["error"], str)
        assert answer["error"]
        assert "\n" not in answer["error"]
        assert "internal error" not in answer["error"], answer
    for name in ("endless", "endless-json"):
        answers, closed = results[name]
        assert closed, name
        assert len(answers) == 1, (name, answers)
        assert answers[0]["ok"] is False
        assert str(MAX_LINE) in answers[0]["error"]
    assert results["half-closed"] == ([], True)
    slow_answers, _ = results["slow"]
    assert len(slow_answers) == 1
    assert slow_answers[0]["ok"] is True
    assert "status" in slow_answers[0]

    assert sup.proc.poll() is None
    assert pids(sup) == before
    assert all_running(sup)
    assert not sup.seen(r"internal error|Traceback")


def test_random_lines_on_the_live_socket_get_one_error_each(start_fleet: StartFleet) -> None:
    sup = start_fleet(fleet_config(["random_one"]))
    sup.wait_for(r"random_one: ready")
    before = pids(sup)

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.binary(max_size=400).filter(lambda b: b"\n" not in b))
    def one_line(line: bytes) -> None:
        try:
            parse_request(line)
        except ProtocolError:
            pass
        else:
            assume(False)  # a valid request (never seen in practice) would act
        answers, _closed = converse(sup.control, line + b"\n", answers=1)
        assert len(answers) == 1
        assert answers[0]["ok"] is False
        assert answers[0]["error"]

    one_line()
    assert pids(sup) == before
    assert all_running(sup)


# --- the config on reload ---------------------------------------------------------------


def _alias_bomb() -> bytes:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
    return ("\n".join(lines) + "\ntwitch:\n  channels: *a7\n").encode()


def test_bad_configs_on_reload_are_refused_and_change_nothing(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    doc = fleet_config(["steady_one", "steady_two"])
    sup = start_fleet(doc)
    sup.wait_for(r"steady_one: ready")
    sup.wait_for(r"steady_two: ready")
    before = pids(sup)
    good = yaml.safe_dump(doc, sort_keys=False).encode()
    config = tmp_path / "config" / "config.yaml"

    def with_channels(*names: str) -> bytes:
        return yaml.safe_dump({**doc, "twitch": {"channels": list(names)}}).encode()

    def with_supervisor(**extra: Any) -> bytes:
        return yaml.safe_dump({**doc, "supervisor": {**doc["supervisor"], **extra}}).encode()

    cases: list[tuple[str, bytes, str]] = [
        ("cut", good[: good.index(b"steady_two") + 3], "twitch.channels[1]: 'ste'"),
        ("cut-in-key", good[: good.index(b"stop_timeout_sec") + 4], "config/config.yaml"),
        ("path", with_channels("steady_one", "../../etc"), "twitch.channels[1]: '../../etc'"),
        ("shell", with_channels("steady_one", "a;b$(id)`x`"), "twitch.channels[1]:"),
        ("unit", with_channels("steady_one", "bad@x.service"), "twitch.channels[1]:"),
        ("newline", with_channels("steady_one", "two\nlines"), "twitch.channels[1]:"),
        ("long", with_channels("steady_one", "x" * 1000), "twitch.channels[1]:"),
        ("unicode", with_channels("steady_one", "st\u212aady"), "twitch.channels[1]:"),
        ("twice", with_channels("steady_one", "STEADY_ONE"), "is listed twice"),
        ("unknown-key", with_supervisor(stop_timout_sec=1), "supervisor.stop_timout_sec"),
        ("bad-value", with_supervisor(stop_timeout_sec="soon"), "supervisor.stop_timeout_sec"),
        ("huge-int", good + b"timeouts: {x: 1" + b"0" * 5000 + b"}\n", "a value cannot be read"),
        ("alias-bomb", _alias_bomb(), "once its aliases are expanded"),
        # Our own bound (64 levels) or libyaml's (1000, in PyYAML 6.0.2+'s wheels)
        # stops it, whichever comes first: the contract is the refusal, not whose words.
        ("depth-bomb", b"twitch: " + b"[" * 50_000 + b"]" * 50_000, "invalid YAML"),
        ("not-utf8", good + b"\nbot: {name: \xff\xfe}\n", "invalid YAML"),
        ("nul", good + b"\0", "invalid YAML"),
        ("empty", b"", "twitch.channels: missing"),
        ("not-a-mapping", b"- a\n- b\n", "expected a mapping at the top"),
        ("no-key-file", with_supervisor(use_db=True), ".kissbot.key"),
    ]
    for name, content, fragment in cases:
        config.write_bytes(content)
        response = sup.request({"cmd": "reload"})
        assert response["ok"] is False, name
        error = response["error"]
        assert error.startswith("reload refused, nothing changed: "), (name, error)
        assert fragment in error, (name, error[:300])
        assert "\n" not in error, name
        assert len(error) < 2000, (name, len(error))
        assert sup.proc.poll() is None, name
    assert pids(sup) == before
    assert all_running(sup)
    assert not (tmp_path / ".kissbot.key").exists()  # never made, not even on a failed reload
    config.write_bytes(good)
    response = sup.request({"cmd": "reload"})
    assert response == {"ok": True, "changes": {"added": [], "removed": [], "changed": []}}
    assert pids(sup) == before


# --- the token DB under a running fleet ---------------------------------------------


def snapshot(workdir: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of the DB, its -wal/-shm and the key: KissBot's files."""
    names = ("kissbot.db", "kissbot.db-wal", "kissbot.db-shm", ".kissbot.key")
    return {
        n: ((workdir / n).read_bytes(), (workdir / n).stat().st_mtime_ns)
        for n in names
        if (workdir / n).exists()
    }


def db_fleet(
    workdir: Path, channels: list[str], *, credential: bool = False
) -> tuple[KissbotDb, dict[str, Any]]:
    key = write_key_file(workdir)
    db = KissbotDb.create(workdir / "kissbot.db", key=key)
    db.add_account("serda_bot", "1001", SECRET, expires_at=time.time() + 86_400)
    # No hub: the demo hub writes its state into the DB, and this test wants
    # the supervisor to be its only other reader.
    supervisor = {"use_db": True, "bot": {"credential": credential}}
    return db, fleet_config(channels, supervisor=supervisor)


def token_states(sup: Supervisor) -> dict[str, str]:
    return {b["channel"]: b["token_state"] for b in sup.status()["bots"]}


def test_a_locked_db_is_retried_and_reported_without_touching_the_fleet(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    db, doc = db_fleet(tmp_path, ["locked_one", "locked_two"])
    before_files = snapshot(tmp_path)
    sup = start_fleet(doc)
    sup.wait_for(r"locked_one: ready")
    sup.wait_for(r"locked_two: ready")
    # Reading at start-up wrote nothing and left no -wal/-shm behind.
    assert snapshot(tmp_path) == before_files
    before = pids(sup)
    mark = sup.mark()
    with closing(db.connect()) as kissbot:
        # Exclusive locking mode keeps the write lock after the commit: every
        # reader gets SQLITE_BUSY until this connection closes.
        kissbot.execute("PRAGMA locking_mode = EXCLUSIVE")
        kissbot.execute("UPDATE oauth_tokens SET needs_reauth = 1")
        sup.wait_for(r"tokens: cannot read token states \(.*locked.*\); trying again", since=mark)
        # The loop is not blocked: commands are answered while the DB is locked.
        assert pids(sup) == before
        assert token_states(sup) == {"locked_one": "valid", "locked_two": "valid"}
    # Unlocked: it was retried, and the change is seen; running bots are left running.
    sup.wait_for(r"tokens: token states can be read again", since=mark)
    wait_until(
        lambda: set(token_states(sup).values()) == {"needs-reauth"}, what="needs-reauth seen"
    )
    # Said once, however many retries the lock cost, and once more at its end.
    assert len(sup.seen(r"tokens: cannot read token states")) == 1
    assert pids(sup) == before
    assert all_running(sup)
    assert SECRET not in json.dumps(sup.status())


def test_the_db_going_bad_under_a_running_fleet_changes_nothing(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    db, doc = db_fleet(tmp_path, ["steady_db_one", "steady_db_two"])
    sup = start_fleet(doc)
    sup.wait_for(r"steady_db_one: ready")
    sup.wait_for(r"steady_db_two: ready")
    before = pids(sup)
    good = db.path.read_bytes()

    def replace_db(content: bytes) -> None:
        staged = tmp_path / "staged.db"
        staged.write_bytes(content)
        os.replace(staged, db.path)  # IN_MOVED_TO, as an editor or a restore would do

    def expect_unreadable(fragment: str) -> None:
        sup.wait_for(rf"tokens: cannot read token states \(.*{fragment}", since=mark)
        assert pids(sup) == before
        assert all_running(sup)
        # The last good reading stands.
        assert set(token_states(sup).values()) == {"valid"}

    # Cut short.
    mark = sup.mark()
    replace_db(good[:1000])
    expect_unreadable(r"kissbot\.db")
    # An unknown schema: a column renamed.
    renamed = tmp_path / "renamed" / "kissbot.db"
    renamed.parent.mkdir()
    renamed.write_bytes(good)
    with closing(sqlite3.connect(renamed)) as conn:
        conn.execute("ALTER TABLE oauth_tokens RENAME COLUMN needs_reauth TO reauth_needed")
    mark = sup.mark()
    replace_db(renamed.read_bytes())
    expect_unreadable(r"missing column oauth_tokens\.needs_reauth")
    # The old schema: read as such. Its token expires within the hour, so the
    # state changes and shows that the file was read.
    legacy = KissbotDb.create(tmp_path / "renamed" / "legacy.db", schema="legacy", key=db.key)
    legacy.add_account("serda_bot", "1001", SECRET, expires_at=time.time() + 600)
    replace_db(legacy.path.read_bytes())
    wait_until(lambda: set(token_states(sup).values()) == {"expiring"}, what="the old schema read")
    assert pids(sup) == before
    assert all_running(sup)


@pytest.mark.parametrize("key", ["other-valid-key", "garbage", "missing"])
def test_a_wrong_or_missing_key_blocks_a_restart_clearly_and_spares_the_others(
    start_fleet: StartFleet, tmp_path: Path, key: str
) -> None:
    # The bots ask for their token: the restart decrypts it (in a child) at once.
    db, doc = db_fleet(tmp_path, ["key_one", "key_two"], credential=True)
    sup = start_fleet(doc)
    sup.wait_for(r"key_one: ready")
    sup.wait_for(r"key_two: ready")
    before = pids(sup)
    good_key = (tmp_path / ".kissbot.key").read_bytes()
    staged = tmp_path / "staged.key"
    if key == "missing":
        (tmp_path / ".kissbot.key").unlink()
    else:
        staged.write_bytes(new_key() if key == "other-valid-key" else b"SECRET-garbage\x00\xff")
        os.chmod(staged, 0o600)
        os.replace(staged, tmp_path / ".kissbot.key")
    after_key = snapshot(tmp_path)
    result = sup.ctl("restart", "key_one")
    assert result.returncode != 0
    assert "key_one" in result.stdout + result.stderr
    # One failed start, then held back by its token state (a retry cannot help).
    wait_until(
        lambda: (
            (sup.bot("key_one")["state"], sup.bot("key_one")["token_state"])
            == ("stopped", "undecryptable")
        ),
        what="key_one held back as undecryptable",
    )
    bot = sup.bot("key_one")
    assert bot["state"] == "stopped"
    assert bot["pid"] is None
    assert ".kissbot.key" in (bot["reason"] or "") or "decrypt" in (bot["reason"] or "")
    assert SECRET not in json.dumps(sup.status())
    assert not any(SECRET in line or "SECRET-garbage" in line for line in sup.lines)
    assert sup.bot("key_two")["pid"] == before["key_two"]
    assert snapshot(tmp_path) == after_key  # no key made, nothing rewritten
    assert not (tmp_path / ".kissbot.key").exists() or key != "missing"
    # The key fixed: the bot starts by itself.
    staged.write_bytes(good_key)
    os.chmod(staged, 0o600)
    os.replace(staged, tmp_path / ".kissbot.key")
    wait_until(lambda: sup.bot("key_one")["state"] == "running", what="key_one back")
    assert sup.bot("key_two")["pid"] == before["key_two"]
    del db


def test_a_db_cut_short_at_start_is_reported_and_never_rewritten(tmp_path: Path) -> None:
    db, doc = db_fleet(tmp_path, ["cut_one"])
    os.truncate(db.path, 1000)
    before = snapshot(tmp_path)
    write_config(tmp_path, doc)
    sup = Supervisor(tmp_path)
    try:
        line = sup.wait_for(r"tokens: cannot read token states \(.*\)").group(0)
        assert str(db.path) in line
        assert SECRET not in line
        status = sup.status()
        assert status["bots"][0]["token_state"] in ("unchecked", "valid")
        assert snapshot(tmp_path) == before
        assert not (tmp_path / "kissbot.db-wal").exists()
    finally:
        sup.stop()
