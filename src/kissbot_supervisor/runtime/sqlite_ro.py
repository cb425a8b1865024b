"""Opening a SQLite file that others write (KissBot's ``kissbot.db``), read-only and safely.

One home for the rule both readers follow (the token states, ``tokens/db.py``;
the hub's ``hub_state``, ``kissbot/readiness.py``): the file is checked to be a
regular file by runtime/fs.py's rule before SQLite opens it by name (a FIFO
planted as the DB would block the opener), and it is opened with ``mode=ro``
(never created, never written). Imported lazily: only those who read a DB pay
for ``sqlite3``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from .fs import open_regular, read_fd


def header(db_path: Path) -> bytes:
    """The file's first bytes. Raises FileNotFoundError, fs.NotRegularFile (a FIFO,
    a symlink, a directory) or another OSError."""
    fd = open_regular(db_path)
    try:
        return read_fd(fd, 19)
    finally:
        os.close(fd)


def _wal_without_writer(db_path: Path, head: bytes) -> bool:
    """A WAL-mode database (header bytes 18-19 are 2) without a DB-wal file."""
    wal = head[:16] == b"SQLite format 3\0" and head[18:20] == b"\x02\x02"
    return wal and not db_path.with_name(db_path.name + "-wal").exists()


def connect_read_only(db_path: Path, head: bytes, busy_timeout: float) -> sqlite3.Connection:
    """A read-only, autocommit connection to ``db_path``, whose :func:`header` is ``head``."""
    # mode=ro: SQLite refuses to create a missing file and to write, whatever
    # the file permissions allow. quote() keeps '?', '#' and '%' in names literal.
    uri = f"file:{quote(str(db_path.absolute()))}?mode=ro"
    if _wal_without_writer(db_path, head):
        # Even read-only, SQLite creates DB-wal and DB-shm for a WAL database that
        # has none (nobody has it open) and cannot remove them: files owned by the
        # supervisor's user (root, under systemd) that KissBot then cannot write.
        # With no DB-wal every committed row is in the main file, which only a
        # checkpoint rewrites; a writer that appears meanwhile changes DB-wal.
        uri += "&immutable=1"
    # timeout= is SQLite's busy timeout: how long one statement waits for a lock.
    return sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
