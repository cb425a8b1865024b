"""Reading KissBot's token database (``kissbot.db``) read-only.

KissBot's bots and hub write this SQLite file (WAL mode) while the
supervisor reads it, so every read here is one short read-only transaction,
opened with ``mode=ro`` (the file is never created, never written), with a
busy timeout and a few retries with backoff when a writer holds a lock.

Two schema versions exist. The current one types each token row
(``token_type`` 'bot' or 'broadcaster') and gives it a ``status``; the older
one has neither, and ``users.is_bot`` tells the bot's row from the
broadcasters'. The version is detected from the columns, never assumed.

Nothing here decrypts: :func:`read_db_tokens` reads states only, and
:func:`read_db_secret` hands back the still-encrypted column for
:func:`.tokens.decrypt_token`, which the caller runs at the last moment.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Literal, TypeVar  # at run time: DB mode only, loaded lazily

from ..core.records import record
from ..runtime.fs import NotRegularFile
from ..runtime.sqlite_ro import connect_read_only, header
from .states import (
    DbTokens,
    TokenDbBusy,
    TokenDbError,
    TokenDbNotFound,
    TokenDbSchemaError,
    TokenReport,
    TokenState,
    assess_stored_token,
    parse_expires_at,
)

T = TypeVar("T")
TokenType = Literal["bot", "broadcaster"]


@record
class DbRetry:
    """How long to wait for a writer's lock: per attempt inside SQLite, then between attempts."""

    attempts: int = 5
    busy_timeout: float = 0.5  # seconds SQLite itself waits for a lock, per attempt
    backoff: float = 0.1  # seconds before the second attempt, doubled for each next one

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.busy_timeout < 0 or self.backoff < 0:
            raise ValueError(
                f"DbRetry needs attempts >= 1 and no negative times, got attempts="
                f"{self.attempts}, busy_timeout={self.busy_timeout}, backoff={self.backoff}"
            )


DEFAULT_RETRY = DbRetry()

_USERS_NEEDED = ("id", "twitch_user_id", "twitch_login")
_TOKENS_NEEDED = ("user_id", "access_token_encrypted", "expires_at", "needs_reauth")


@record
class _Schema:
    typed: bool  # current schema: oauth_tokens.token_type exists
    has_status: bool
    has_failures: bool


@record
class _Row:
    """One token row joined with its user; holds no secret."""

    token_id: int
    login: str
    user_id: str
    kind: TokenType
    needs_reauth: bool
    status: str | None
    expires_at: object  # as stored; judged by tokens.parse_expires_at
    refresh_failures: int | None


def _sqlite_bool(value: object) -> bool:
    # BOOLEAN columns hold integers, but hand edits leave text such as 'true' behind.
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return bool(value)


def _is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return True
    text = str(error).lower()
    return "database is locked" in text or "busy" in text


def _connect(db_path: Path, busy_timeout: float) -> sqlite3.Connection:
    """runtime/sqlite_ro.py's read-only connection, its failures as TokenDbError: a
    FIFO or a symlink a bot planted as kissbot.db is refused before SQLite opens it
    by name (a swap between the two is left to the short-lived reader of the
    real-fleets work); a WAL database nobody has open is read as immutable, and
    inotify has the token gate read again once a writer appears."""
    try:
        head = header(db_path)
    except FileNotFoundError:
        raise TokenDbNotFound(db_path) from None
    except NotRegularFile as e:
        raise TokenDbError(db_path, f"{e.strerror}; expected an SQLite database file") from None
    except OSError as e:
        raise TokenDbError(db_path, f"cannot be opened ({e.strerror})") from None
    return connect_read_only(db_path, head, busy_timeout)


def _read(
    db_path: Path,
    retry: DbRetry,
    sleep: Callable[[float], None],
    work: Callable[[sqlite3.Connection], T],
) -> T:
    """Run ``work`` in one read transaction, retrying while a writer holds a lock."""
    waited = 0.0
    for attempt in range(1, retry.attempts + 1):
        try:
            with closing(_connect(db_path, retry.busy_timeout)) as conn:
                # One transaction: bot and broadcaster rows come from one snapshot.
                conn.execute("BEGIN")
                try:
                    return work(conn)
                finally:
                    conn.execute("ROLLBACK")
        except sqlite3.Error as e:
            if not _is_busy(e):
                raise TokenDbError(db_path, f"cannot be read (SQLite says: {e})") from None
            waited += retry.busy_timeout
            if attempt == retry.attempts:
                break
            delay = retry.backoff * 2 ** (attempt - 1)
            sleep(delay)
            waited += delay
    raise TokenDbBusy(db_path, retry.attempts, waited)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}


def _schema(conn: sqlite3.Connection, db_path: Path) -> _Schema:
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    missing = [f"table {t}" for t in ("users", "oauth_tokens") if t not in tables]
    if missing:
        raise TokenDbSchemaError(db_path, tuple(missing))
    users, tokens = _columns(conn, "users"), _columns(conn, "oauth_tokens")
    typed = "token_type" in tokens
    # Without token_type, users.is_bot is the only way to tell a bot token.
    users_needed = _USERS_NEEDED if typed else (*_USERS_NEEDED, "is_bot")
    missing = [f"column users.{c}" for c in users_needed if c not in users]
    missing += [f"column oauth_tokens.{c}" for c in _TOKENS_NEEDED if c not in tokens]
    if missing:
        raise TokenDbSchemaError(db_path, tuple(missing))
    return _Schema(typed, "status" in tokens, "refresh_failures" in tokens)


def _rows(conn: sqlite3.Connection, schema: _Schema) -> list[_Row]:
    # Column names are ours (never user input); absent ones read as NULL.
    kind = "t.token_type" if schema.typed else "u.is_bot"
    status = "t.status" if schema.has_status else "NULL"
    failures = "t.refresh_failures" if schema.has_failures else "NULL"
    query = (
        f"SELECT t.id, u.twitch_login, u.twitch_user_id, {kind}, t.needs_reauth, {status}, "
        f"t.expires_at, {failures} FROM oauth_tokens t JOIN users u ON u.id = t.user_id"
    )
    rows = []
    for token_id, login, user_id, raw_kind, reauth, st, expires, fails in conn.execute(query):
        if schema.typed:
            if raw_kind not in ("bot", "broadcaster"):
                continue  # a token type this supervisor has no use for
            row_kind: TokenType = "bot" if raw_kind == "bot" else "broadcaster"
        else:
            row_kind = "bot" if _sqlite_bool(raw_kind) else "broadcaster"
        rows.append(
            _Row(
                token_id=int(token_id),
                login=str(login).lower(),
                user_id=str(user_id),
                kind=row_kind,
                needs_reauth=_sqlite_bool(reauth),
                status=st if isinstance(st, str) else None,
                expires_at=expires,
                refresh_failures=fails if isinstance(fails, int) else None,
            )
        )
    return rows


def _rank(row: _Row) -> tuple[int, float, int]:
    """Sort key, best first, independent of the clock so every reader picks the same row.

    Usable before refreshable before blocked; then the latest expiry, then the newest row.
    """
    if row.status == "revoked":
        usability = 3
    elif row.needs_reauth:
        usability = 2
    elif row.status == "expired":
        usability = 1
    else:
        usability = 0
    expires = parse_expires_at(row.expires_at)
    return (usability, -(expires if expires is not None else -math.inf), -row.token_id)


def _candidates(rows: list[_Row], kind: TokenType, login: str) -> list[_Row]:
    """The ``kind`` token rows of ``login`` (users.twitch_login is not unique), best first."""
    return sorted((r for r in rows if r.kind == kind and r.login == login), key=_rank)


def _bot_report(
    conn: sqlite3.Connection, rows: list[_Row], db_path: Path, bot_login: str, now: float
) -> TokenReport:
    candidates = _candidates(rows, "bot", bot_login)
    if candidates:
        return _assess(candidates[0], f"bot token of {bot_login}", db_path, now)
    known = conn.execute(
        "SELECT count(*) FROM users WHERE lower(twitch_login) = ?", (bot_login,)
    ).fetchone()[0]
    if not known:
        why = f"table users has no login {bot_login} (bot.name)"
    elif any(r.login == bot_login for r in rows):
        why = f"{bot_login} has only a broadcaster token there"
    else:
        why = f"{bot_login} is in table users but has no row in oauth_tokens"
    return TokenReport(
        TokenState.MISSING,
        f"no bot token for {bot_login} in {db_path}: {why}; authorise the bot account with "
        "KissBot's OAuth flow",
        None,
        bot_login,
    )


def _broadcaster_report(rows: list[_Row], db_path: Path, hub_login: str, now: float) -> TokenReport:
    """The hub's token: KissBot's hub loads the broadcaster token of one login, hard-coded
    upstream (``hub.token_login``), whatever twitch.broadcaster_id says."""
    candidates = _candidates(rows, "broadcaster", hub_login)
    if not candidates:
        others = sorted({r.login for r in rows if r.kind == "broadcaster"})
        besides = f" (it has broadcaster tokens of {', '.join(others)} only)" if others else ""
        return TokenReport(
            TokenState.MISSING,
            f"no broadcaster token for {hub_login} in {db_path}{besides}: the hub loads "
            f"that one (hub.token_login) and exits 1 without it; authorise {hub_login} as "
            "broadcaster with KissBot's OAuth flow",
            None,
            hub_login,
        )
    subject = f"broadcaster token of {hub_login}"
    if len(candidates) > 1:
        subject += f" (the best of {len(candidates)} rows for that login)"
    return _assess(candidates[0], subject, db_path, now)


def _assess(row: _Row, subject: str, db_path: Path, now: float) -> TokenReport:
    return assess_stored_token(
        subject=subject,
        source=str(db_path),
        needs_reauth=row.needs_reauth,
        status=row.status,
        expires_at=row.expires_at,
        now=now,
        login=row.login,
        user_id=row.user_id,
        refresh_failures=row.refresh_failures,
    )


def read_db_tokens(
    db_path: Path,
    bot_login: str,
    hub_login: str,
    now: float,
    *,
    retry: DbRetry = DEFAULT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
) -> DbTokens:
    """The bots' and the hub's token states, from one read-only snapshot of ``db_path``.

    ``bot_login`` is config ``bot.name``; ``hub_login`` is ``hub.token_login``
    (the login whose broadcaster token the hub loads). Raises
    :class:`.tokens.TokenDbError` (or a subclass) when the file is missing,
    locked past every retry, or not a known KissBot schema.
    """
    login = bot_login.strip().lower()
    caster = hub_login.strip().lower()

    def work(conn: sqlite3.Connection) -> DbTokens:
        rows = _rows(conn, _schema(conn, db_path))
        return DbTokens(
            bot=_bot_report(conn, rows, db_path, login, now),
            broadcaster=_broadcaster_report(rows, db_path, caster, now),
        )

    return _read(db_path, retry, sleep, work)


def read_db_secret(
    db_path: Path,
    login: str,
    token_type: TokenType,
    *,
    retry: DbRetry = DEFAULT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """The still-encrypted access token of the row :func:`read_db_tokens` reports on:
    the best ``token_type`` row of ``login`` (``bot.name`` for 'bot',
    ``hub.token_login`` for 'broadcaster').

    Returns None when there is no such row. The value is base64 of a Fernet
    token: pass it to :func:`.tokens.decrypt_token` only when handing it over.
    """
    if not login.strip():
        raise ValueError("read_db_secret needs the login whose token it reads")
    if token_type not in ("bot", "broadcaster"):
        raise ValueError(
            f"read_db_secret: token_type must be 'bot' or 'broadcaster', not {token_type!r}"
        )
    wanted = login.strip().lower()

    def work(conn: sqlite3.Connection) -> str | None:
        rows = _rows(conn, _schema(conn, db_path))
        candidates = _candidates(rows, token_type, wanted)
        if not candidates:
            return None
        found = conn.execute(
            "SELECT access_token_encrypted FROM oauth_tokens WHERE id = ?",
            (candidates[0].token_id,),
        ).fetchone()
        value = found[0] if found else None
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        return value if isinstance(value, str) and value else None

    return _read(db_path, retry, sleep, work)
