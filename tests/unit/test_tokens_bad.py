"""Bad token databases, read the way the token gate reads them: clear errors, nothing written.

Complements ``test_tokens.py`` (missing file, unknown tables, missing columns,
text that is not SQLite, locks, wrong keys): a DB cut short, columns renamed,
and the files a read leaves behind. Every DB is a real KissBot SQLite file.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest

from fixtures.kissbot_db import KissbotDb
from kissbot_supervisor.tokens.db import DbRetry, read_db_tokens
from kissbot_supervisor.tokens.states import TokenDbError, TokenDbSchemaError, TokenState

NOW = datetime(2025, 6, 15, 12, 0, 0).timestamp()
DAY = 86400.0
FAST = DbRetry(attempts=2, busy_timeout=0.02, backoff=0.01)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime: what 'nothing written' means."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


@pytest.fixture
def wal_db(tmp_path: Path) -> KissbotDb:
    db = KissbotDb.create(tmp_path / "kissbot.db")
    db.add_account("serda_bot", "111", "SECRET-bot", expires_at=NOW + DAY)
    return db


def test_reading_a_closed_wal_db_leaves_no_wal_or_shm_behind(wal_db: KissbotDb) -> None:
    """SQLite made DB-wal and DB-shm even read-only: root-owned files KissBot could not write."""
    before = snapshot(wal_db.path.parent)
    assert list(before) == ["kissbot.db"]
    assert read_db_tokens(wal_db.path, "serda_bot", "el_serda", NOW, retry=FAST).bot.state is (
        TokenState.VALID
    )
    assert snapshot(wal_db.path.parent) == before


def test_reading_while_kissbot_has_the_db_open_sees_its_commits_and_writes_nothing(
    wal_db: KissbotDb,
) -> None:
    with closing(wal_db.connect()) as kissbot:
        kissbot.execute("UPDATE oauth_tokens SET needs_reauth = 1")  # committed, in DB-wal
        before = snapshot(wal_db.path.parent)
        tokens = read_db_tokens(wal_db.path, "serda_bot", "el_serda", NOW, retry=FAST)
        after = snapshot(wal_db.path.parent)
    assert tokens.bot.state is TokenState.NEEDS_REAUTH
    assert set(after) == set(before) == {"kissbot.db", "kissbot.db-wal", "kissbot.db-shm"}
    for name in ("kissbot.db", "kissbot.db-wal"):
        assert after[name] == before[name], name
    # A WAL reader records its read mark in the shared-memory file (mapped, so
    # its mtime stays); that is how SQLite readers work, not a write of data.
    assert after["kissbot.db-shm"][1] == before["kissbot.db-shm"][1]


@pytest.mark.parametrize("keep", [0, 1, 50, 100, 4096, 8192, -1], ids=lambda k: f"keep{k}")
def test_a_db_cut_short_is_a_clear_error_and_stays_as_it_is(wal_db: KissbotDb, keep: int) -> None:
    """Cut anywhere: a clear error naming the file, or (when the pages it needs are
    intact, e.g. one byte short of the end) a normal read; never anything else."""
    size = wal_db.path.stat().st_size
    os.truncate(wal_db.path, size - 1 if keep == -1 else keep)
    before = snapshot(wal_db.path.parent)
    try:
        read_db_tokens(wal_db.path, "serda_bot", "el_serda", NOW, retry=FAST)
    except TokenDbError as e:
        message = str(e)
        assert str(wal_db.path) in message
        assert "\n" not in message
        assert "SECRET" not in message
    else:
        assert keep in (-1, 8192), f"a DB cut to {keep} bytes was read"
    assert snapshot(wal_db.path.parent) == before


def test_an_empty_file_is_an_unknown_schema(tmp_path: Path) -> None:
    path = tmp_path / "kissbot.db"
    path.write_bytes(b"")
    with pytest.raises(TokenDbSchemaError) as info:
        read_db_tokens(path, "serda_bot", "el_serda", NOW, retry=FAST)
    assert info.value.missing == ("table users", "table oauth_tokens")
    assert path.read_bytes() == b""


@pytest.mark.parametrize(
    ("table", "column", "missing"),
    [
        ("oauth_tokens", "needs_reauth", "column oauth_tokens.needs_reauth"),
        ("oauth_tokens", "access_token_encrypted", "column oauth_tokens.access_token_encrypted"),
        ("oauth_tokens", "expires_at", "column oauth_tokens.expires_at"),
        ("users", "twitch_login", "column users.twitch_login"),
    ],
)
def test_a_renamed_column_is_named(
    wal_db: KissbotDb, table: str, column: str, missing: str
) -> None:
    with closing(sqlite3.connect(wal_db.path)) as conn:
        conn.execute(f"ALTER TABLE {table} RENAME COLUMN {column} TO {column}_v2")
    before = snapshot(wal_db.path.parent)
    with pytest.raises(TokenDbSchemaError) as info:
        read_db_tokens(wal_db.path, "serda_bot", "el_serda", NOW, retry=FAST)
    assert info.value.missing == (missing,)
    assert f"missing {missing}" in str(info.value)
    assert snapshot(wal_db.path.parent) == before


def test_a_renamed_table_is_named(wal_db: KissbotDb) -> None:
    with closing(sqlite3.connect(wal_db.path)) as conn:
        conn.execute("ALTER TABLE oauth_tokens RENAME TO oauth_tokens_v3")
    with pytest.raises(TokenDbSchemaError) as info:
        read_db_tokens(wal_db.path, "serda_bot", "el_serda", NOW, retry=FAST)
    assert info.value.missing == ("table oauth_tokens",)


def test_the_old_schema_reads_and_writes_nothing(tmp_path: Path) -> None:
    db = KissbotDb.create(tmp_path / "kissbot.db", schema="legacy")
    db.add_account("serda_bot", "111", "SECRET-bot", expires_at=NOW + DAY)
    before = snapshot(tmp_path)
    assert read_db_tokens(db.path, "serda_bot", "el_serda", NOW, retry=FAST).bot.state is (
        TokenState.VALID
    )
    assert snapshot(tmp_path) == before
