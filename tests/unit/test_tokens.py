"""Token states from real KissBot databases and configs; keys, decryption, credential files.

Every database here is a real SQLite file in KissBot's schema (both versions,
see ``fixtures.kissbot_db``); ``now`` is fixed, so no assertion depends on
the wall clock.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest

from fixtures.kissbot_db import KissbotDb, Schema, encrypt_token, new_key, write_key_file
from kissbot_supervisor.tokens.db import DbRetry, read_db_secret, read_db_tokens
from kissbot_supervisor.tokens.states import (
    CredentialFileError,
    DbTokens,
    KeyFileError,
    KeyFileMissing,
    TokenConfigError,
    TokenDbBusy,
    TokenDbError,
    TokenDbNotFound,
    TokenDbSchemaError,
    TokenReport,
    TokenState,
    UndecryptableToken,
    blocks_start,
    decrypt_token,
    key_file_problems,
    load_fernet_key,
    mark_undecryptable,
    read_yaml_tokens,
    remove_credentials,
    write_credential,
)

# Mid-June: hours either side never cross a daylight-saving change.
NOW = datetime(2025, 6, 15, 12, 0, 0).timestamp()
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
BOT_SECRET = "SECRET-bot-access-token-0123456789"
CASTER_SECRET = "SECRET-broadcaster-access-token-9876543210"
CONFIG = Path("config/config.yaml")
FAST = DbRetry(attempts=3, busy_timeout=0.02, backoff=0.01)


@pytest.fixture(params=["current", "legacy"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> KissbotDb:
    schema: Schema = request.param
    return KissbotDb.create(tmp_path / "kissbot.db", schema=schema)


@pytest.fixture
def current_db(tmp_path: Path) -> KissbotDb:
    return KissbotDb.create(tmp_path / "kissbot.db", schema="current")


def read(db: KissbotDb, bot: str = "serda_bot", hub: str = "el_serda") -> DbTokens:
    return read_db_tokens(db.path, bot, hub, NOW, retry=FAST)


# --- states ---------------------------------------------------------------------------


def test_blocks_start_only_for_states_that_make_kissbot_exit_at_start() -> None:
    blocking = {s for s in TokenState if blocks_start(s)}
    assert blocking == {TokenState.NEEDS_REAUTH, TokenState.REVOKED, TokenState.MISSING}


def test_state_strings_are_the_wire_values() -> None:
    assert [str(s) for s in TokenState] == [
        "valid",
        "expiring",
        "expired",
        "needs-reauth",
        "revoked",
        "missing",
        "undecryptable",
        "unchecked",
    ]


# --- DB mode, both schemas ------------------------------------------------------------


def test_valid_tokens(db: KissbotDb) -> None:
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at=NOW + 4 * HOUR)
    db.add_account("el_serda", "222", CASTER_SECRET, expires_at=NOW + DAY, token_type="broadcaster")
    tokens = read(db)
    assert tokens.bot.state is TokenState.VALID
    assert tokens.bot.login == "serda_bot"
    assert tokens.bot.user_id == "111"
    assert tokens.bot.expires_at == pytest.approx(NOW + 4 * HOUR)
    assert "bot token of serda_bot is valid until" in tokens.bot.reason
    assert tokens.broadcaster.state is TokenState.VALID
    assert tokens.broadcaster.login == "el_serda"
    assert tokens.broadcaster.expires_at == pytest.approx(NOW + DAY)


def test_expiring_within_the_hour(db: KissbotDb) -> None:
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at=NOW + 30 * MINUTE)
    bot = read(db).bot
    assert bot.state is TokenState.EXPIRING
    assert "expires in 30 min" in bot.reason
    assert bot.expires_at == pytest.approx(NOW + 30 * MINUTE)


def test_exactly_one_hour_left_is_still_valid(db: KissbotDb) -> None:
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at=NOW + HOUR)
    assert read(db).bot.state is TokenState.VALID


@pytest.mark.parametrize("offset", [0.0, -1.0, -DAY])
def test_expired_by_time(db: KissbotDb, offset: float) -> None:
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at=NOW + offset)
    bot = read(db).bot
    assert bot.state is TokenState.EXPIRED
    assert "expired at" in bot.reason
    assert not blocks_start(bot.state)


def test_needs_reauth_wins_over_a_valid_expiry(db: KissbotDb) -> None:
    db.add_account(
        "serda_bot", "111", BOT_SECRET, expires_at=NOW + DAY, needs_reauth=True, refresh_failures=3
    )
    bot = read(db).bot
    assert bot.state is TokenState.NEEDS_REAUTH
    assert "needs_reauth after 3 failed refreshes" in bot.reason
    assert str(db.path) in bot.reason
    assert "re-authorise it with KissBot's OAuth flow" in bot.reason


@pytest.mark.parametrize(
    "stored", ["2025-06-15 16:00:00", "2025-06-15T16:00:00", "2025-06-15T16:00:00.250000"]
)
def test_expires_at_without_fraction_or_with_t(db: KissbotDb, stored: str) -> None:
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at=stored)
    bot = read(db).bot
    assert bot.state is TokenState.VALID
    assert bot.expires_at == pytest.approx(NOW + 4 * HOUR, abs=1)


def test_unreadable_expires_at_counts_as_expired(db: KissbotDb) -> None:
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at="next tuesday")
    bot = read(db).bot
    assert bot.state is TokenState.EXPIRED
    assert bot.expires_at is None
    assert "unreadable expires_at 'next tuesday'" in bot.reason


def test_bot_login_is_compared_lowercased(db: KissbotDb) -> None:
    db.add_account("Serda_Bot", "111", BOT_SECRET, expires_at=NOW + DAY)
    assert read(db, bot="SERDA_BOT").bot.state is TokenState.VALID


def test_missing_rows(db: KissbotDb) -> None:
    tokens = read(db)
    assert tokens.bot.state is TokenState.MISSING
    assert "table users has no login serda_bot (bot.name)" in tokens.bot.reason
    assert tokens.broadcaster.state is TokenState.MISSING
    assert tokens.broadcaster.reason.startswith("no broadcaster token for el_serda in ")
    assert "the hub loads that one (hub.token_login) and exits 1 without it" in (
        tokens.broadcaster.reason
    )
    assert blocks_start(tokens.bot.state)
    assert blocks_start(tokens.broadcaster.state)


def test_bot_user_without_a_token_row(db: KissbotDb) -> None:
    db.add_user("serda_bot", "111", is_bot=True)
    bot = read(db).bot
    assert bot.state is TokenState.MISSING
    assert "serda_bot is in table users but has no row in oauth_tokens" in bot.reason


def test_bot_login_with_only_a_broadcaster_token_is_missing(db: KissbotDb) -> None:
    # In the legacy schema this is a bot user whose users.is_bot is 0.
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at=NOW + DAY, token_type="broadcaster")
    tokens = read(db)
    assert tokens.bot.state is TokenState.MISSING
    assert "has only a broadcaster token" in tokens.bot.reason
    # Not the hub's either: it loads el_serda's (hub.token_login).
    assert tokens.broadcaster.state is TokenState.MISSING
    assert "it has broadcaster tokens of serda_bot only" in tokens.broadcaster.reason


def test_the_hubs_token_is_the_broadcaster_token_of_its_login(db: KissbotDb) -> None:
    # KissBot's hub loads el_serda's broadcaster token, whatever else the DB holds:
    # a valid token of another broadcaster does not make the hub's valid.
    db.add_account("other", "301", CASTER_SECRET, expires_at=NOW + DAY, token_type="broadcaster")
    db.add_account(
        "el_serda",
        "302",
        CASTER_SECRET,
        expires_at=NOW + DAY,
        token_type="broadcaster",
        needs_reauth=True,
    )
    caster = read(db).broadcaster
    assert (caster.login, caster.user_id, caster.state) == (
        "el_serda",
        "302",
        TokenState.NEEDS_REAUTH,
    )
    assert caster.reason.startswith("broadcaster token of el_serda is flagged needs_reauth")
    # A hub patched to load another login's token: hub.token_login names it.
    other = read(db, hub="Other").broadcaster
    assert (other.login, other.state) == ("other", TokenState.VALID)


def test_several_rows_of_the_hubs_login_the_best_is_reported(current_db: KissbotDb) -> None:
    # users.twitch_login is not unique: two users may carry the same login.
    for user_id, needs_reauth in (("301", True), ("303", False)):
        current_db.add_account(
            "el_serda",
            user_id,
            CASTER_SECRET,
            expires_at=NOW + DAY,
            token_type="broadcaster",
            needs_reauth=needs_reauth,
        )
    caster = read(current_db).broadcaster
    assert (caster.user_id, caster.state) == ("303", TokenState.VALID)
    assert "broadcaster token of el_serda (the best of 2 rows for that login)" in caster.reason


# --- secrets and decryption -----------------------------------------------------------


def test_read_db_secret_returns_the_encrypted_value_of_the_reported_row(db: KissbotDb) -> None:
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at=NOW + DAY)
    db.add_account(
        "old",
        "301",
        "SECRET-old",
        expires_at=NOW + DAY,
        token_type="broadcaster",
        needs_reauth=True,
    )
    db.add_account(
        "el_serda", "302", CASTER_SECRET, expires_at=NOW + HOUR * 2, token_type="broadcaster"
    )

    bot_value = read_db_secret(db.path, "serda_bot", "bot", retry=FAST)
    assert bot_value is not None
    assert BOT_SECRET not in bot_value
    assert decrypt_token(db.key, bot_value) == BOT_SECRET

    assert read(db).broadcaster.login == "el_serda"
    caster_value = read_db_secret(db.path, "el_serda", "broadcaster", retry=FAST)
    assert caster_value is not None
    assert decrypt_token(db.key, caster_value) == CASTER_SECRET
    other = read_db_secret(db.path, "old", "broadcaster", retry=FAST)
    assert other is not None
    assert decrypt_token(db.key, other) == "SECRET-old"
    assert read_db_secret(db.path, "nobody", "bot", retry=FAST) is None


def test_wrong_key_makes_a_token_undecryptable(db: KissbotDb) -> None:
    other_key = new_key()
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at=NOW + DAY, key=other_key)
    report = read(db).bot
    assert report.state is TokenState.VALID  # reading states never decrypts
    value = read_db_secret(db.path, "serda_bot", "bot", retry=FAST)
    assert value is not None
    with pytest.raises(UndecryptableToken) as info:
        decrypt_token(db.key, value, "bot token of serda_bot")
    message = str(info.value)
    assert message.startswith("bot token of serda_bot cannot be decrypted: wrong key")
    for secret in (BOT_SECRET, value, db.key.decode(), other_key.decode()):
        assert secret not in message
        assert secret not in repr(info.value)
    marked = mark_undecryptable(report, info.value)
    assert marked.state is TokenState.UNDECRYPTABLE
    assert marked.reason == message
    assert marked.login == "serda_bot"


@pytest.mark.parametrize("value", ["not base64!", "", "aGVsbG8="])
def test_garbage_does_not_decrypt(value: str) -> None:
    with pytest.raises(UndecryptableToken):
        decrypt_token(new_key(), value)


def test_decrypt_with_a_key_that_is_not_fernet() -> None:
    with pytest.raises(UndecryptableToken, match="the key is not a Fernet key"):
        decrypt_token(b"short", encrypt_token(new_key(), BOT_SECRET))


def test_no_secret_in_reports(db: KissbotDb) -> None:
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at=NOW + DAY)
    db.add_account("el_serda", "222", CASTER_SECRET, expires_at=NOW + DAY, token_type="broadcaster")
    tokens = read(db)
    encrypted = read_db_secret(db.path, "serda_bot", "bot", retry=FAST)
    assert encrypted is not None
    shown = repr(tokens) + str(tokens)
    for secret in (BOT_SECRET, CASTER_SECRET, encrypted, db.key.decode()):
        assert secret not in shown


# --- DB file problems -----------------------------------------------------------------


def test_missing_database_is_named_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "kissbot.db"
    with pytest.raises(TokenDbNotFound) as info:
        read_db_tokens(path, "serda_bot", "el_serda", NOW, retry=FAST)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)
    assert "never creates it" in str(info.value)
    assert info.value.path == path
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_reading_writes_nothing(db: KissbotDb) -> None:
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at=NOW + DAY)
    before = db.path.read_bytes()
    read(db)
    assert db.path.read_bytes() == before


def test_unknown_schema_names_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    with pytest.raises(TokenDbSchemaError) as info:
        read_db_tokens(path, "serda_bot", "el_serda", NOW, retry=FAST)
    assert info.value.missing == ("table oauth_tokens",)
    assert str(path) in str(info.value)
    assert "missing table oauth_tokens" in str(info.value)


def test_schema_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "kissbot.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, twitch_user_id TEXT, twitch_login TEXT);"
            "CREATE TABLE oauth_tokens (id INTEGER PRIMARY KEY, user_id INTEGER,"
            " access_token_encrypted TEXT, expires_at TIMESTAMP);"
        )
    with pytest.raises(TokenDbSchemaError) as info:
        read_db_tokens(path, "serda_bot", "el_serda", NOW, retry=FAST)
    # No token_type: legacy, which needs users.is_bot to tell the bot's row.
    assert info.value.missing == ("column users.is_bot", "column oauth_tokens.needs_reauth")


def test_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "kissbot.db"
    path.write_text("this is not a database, just some text long enough " * 20)
    with pytest.raises(TokenDbError, match="cannot be read \\(SQLite says: file is not a database"):
        read_db_tokens(path, "serda_bot", "el_serda", NOW, retry=FAST)


# --- concurrency ----------------------------------------------------------------------


@pytest.fixture
def writer(db: KissbotDb) -> Iterator[sqlite3.Connection]:
    with closing(db.connect()) as conn:
        yield conn
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def test_reading_while_a_wal_writer_holds_a_transaction(
    db: KissbotDb, writer: sqlite3.Connection
) -> None:
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at=NOW + DAY)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE oauth_tokens SET needs_reauth = 1")
    sleeps: list[float] = []
    # The reader sees the last committed snapshot and never waits.
    tokens = read_db_tokens(db.path, "serda_bot", "el_serda", NOW, retry=FAST, sleep=sleeps.append)
    assert tokens.bot.state is TokenState.VALID
    assert sleeps == []
    writer.execute("COMMIT")
    assert read(db).bot.state is TokenState.NEEDS_REAUTH


def rollback_db(tmp_path: Path) -> KissbotDb:
    db = KissbotDb.create(tmp_path / "kissbot.db", journal_mode="delete")
    db.add_account("serda_bot", "111", BOT_SECRET, expires_at=NOW + DAY)
    return db


def test_exclusive_lock_in_rollback_mode_retries_then_fails_clearly(tmp_path: Path) -> None:
    db = rollback_db(tmp_path)
    sleeps: list[float] = []
    with closing(db.connect()) as writer:
        writer.execute("BEGIN EXCLUSIVE")
        with pytest.raises(TokenDbBusy) as info:
            read_db_tokens(db.path, "serda_bot", "el_serda", NOW, retry=FAST, sleep=sleeps.append)
        writer.execute("ROLLBACK")
    assert sleeps == [0.01, 0.02]  # backoff doubles between the 3 attempts
    assert info.value.attempts == 3
    assert str(db.path) in str(info.value)
    assert "still locked by another process after 3 attempts" in str(info.value)


def test_exclusive_lock_released_during_backoff(tmp_path: Path) -> None:
    db = rollback_db(tmp_path)
    with closing(db.connect()) as writer:
        writer.execute("BEGIN EXCLUSIVE")
        sleeps: list[float] = []

        def release(delay: float) -> None:
            sleeps.append(delay)
            writer.execute("ROLLBACK")

        tokens = read_db_tokens(db.path, "serda_bot", "el_serda", NOW, retry=FAST, sleep=release)
    assert tokens.bot.state is TokenState.VALID
    assert sleeps == [0.01]


# --- YAML mode ------------------------------------------------------------------------


def yaml_config(tokens: object, **twitch: object) -> dict[str, object]:
    return {"twitch": {"channels": ["el_serda"], "tokens": tokens, **twitch}}


def entry(token: str = BOT_SECRET, user_id: object = "111") -> dict[str, object]:
    return {"user_id": user_id, "access_token": token, "refresh_token": "SECRET-refresh"}


@pytest.mark.parametrize(
    "config",
    [{}, {"twitch": {"channels": ["a_chan"]}}, yaml_config(None), yaml_config({})],
    ids=["empty", "no-tokens", "null-tokens", "empty-tokens"],
)
def test_yaml_without_tokens_is_unchecked(config: dict[str, object]) -> None:
    assert read_yaml_tokens(config, CONFIG, NOW) is None


def test_yaml_tokens_present() -> None:
    config = yaml_config({"serda_bot": entry(), "el_serda": entry(CASTER_SECRET, "222")})
    tokens = read_yaml_tokens(config, CONFIG, NOW)
    assert tokens is not None
    assert (tokens.bot.state, tokens.bot.login, tokens.bot.expires_at) == (
        TokenState.VALID,
        "serda_bot",
        None,
    )
    assert "config/config.yaml (twitch.tokens.serda_bot)" in tokens.bot.reason
    assert (tokens.broadcaster.state, tokens.broadcaster.login) == (TokenState.VALID, "el_serda")
    for secret in (BOT_SECRET, CASTER_SECRET, "SECRET-refresh"):
        assert secret not in repr(tokens)


def test_yaml_bot_name_from_config_compared_lowercased() -> None:
    config: dict[str, object] = {
        "bot": {"name": "My_Bot"},
        **yaml_config({"MY_BOT": entry(), "serda_bot": entry(user_id="3")}),
    }
    tokens = read_yaml_tokens(config, CONFIG, NOW)
    assert tokens is not None
    assert tokens.bot.login == "my_bot"
    assert tokens.bot.state is TokenState.VALID
    assert tokens.broadcaster.login == "serda_bot"  # not the bot here, so a broadcaster


def test_yaml_missing_and_empty_tokens() -> None:
    absent = read_yaml_tokens(yaml_config({"el_serda": entry(user_id="222")}), CONFIG, NOW)
    assert absent is not None
    assert absent.bot.state is TokenState.MISSING
    assert "twitch.tokens has no entry serda_bot (bot.name)" in absent.bot.reason
    empty = read_yaml_tokens(yaml_config({"serda_bot": entry(token="")}), CONFIG, NOW)
    assert empty is not None
    assert empty.bot.state is TokenState.MISSING
    assert "empty access_token" in empty.bot.reason
    assert empty.broadcaster.state is TokenState.MISSING
    assert "no entry besides the bot's (serda_bot)" in empty.broadcaster.reason


def test_yaml_broadcaster_by_id_even_when_yaml_made_it_a_number() -> None:
    tokens_section = {
        "serda_bot": entry(),
        "first": entry(user_id=301),
        "second": entry(user_id=302),
    }
    tokens = read_yaml_tokens(yaml_config(tokens_section, broadcaster_id=302), CONFIG, NOW)
    assert tokens is not None
    assert (tokens.broadcaster.login, tokens.broadcaster.user_id) == ("second", "302")
    none = read_yaml_tokens(yaml_config(tokens_section, broadcaster_id="999"), CONFIG, NOW)
    assert none is not None
    assert none.broadcaster.state is TokenState.MISSING
    assert "no entry in twitch.tokens has user_id 999" in none.broadcaster.reason


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            yaml_config({"serda_bot": ["a", "b"]}),
            "config/config.yaml: twitch.tokens.serda_bot: "
            "expected a mapping with access_token, got a list",
        ),
        (
            yaml_config(["serda_bot"]),
            "config/config.yaml: twitch.tokens: "
            "expected a mapping of login to token entries, got a list",
        ),
        (
            yaml_config({"serda_bot": {"access_token": 12345}}),
            "config/config.yaml: twitch.tokens.serda_bot.access_token: expected text, got a number",
        ),
        (
            yaml_config({"serda_bot": entry(user_id=["1"])}),
            "config/config.yaml: twitch.tokens.serda_bot.user_id: "
            "expected a Twitch user id (digits), got a list",
        ),
        ({"twitch": "oops"}, "config/config.yaml: twitch: expected a mapping, got text"),
        (
            {"bot": {"name": 7}, **yaml_config({"x": entry()})},
            "config/config.yaml: bot.name: expected the bot account's login, got a number",
        ),
    ],
)
def test_yaml_malformed_sections(config: dict[str, object], message: str) -> None:
    with pytest.raises(TokenConfigError) as info:
        read_yaml_tokens(config, CONFIG, NOW)
    assert str(info.value) == message


def test_yaml_error_never_quotes_a_token_written_in_the_wrong_place() -> None:
    with pytest.raises(TokenConfigError) as info:
        read_yaml_tokens(yaml_config({"serda_bot": BOT_SECRET}), CONFIG, NOW)
    assert BOT_SECRET not in str(info.value)
    assert BOT_SECRET not in repr(info.value)
    assert str(info.value).endswith("got text")


# --- the key file ---------------------------------------------------------------------


def test_load_key(tmp_path: Path) -> None:
    key = write_key_file(tmp_path)
    assert load_fernet_key(tmp_path) == key
    assert key_file_problems(tmp_path / ".kissbot.key") == []


def test_missing_key_is_refused_and_never_created(tmp_path: Path) -> None:
    with pytest.raises(KeyFileMissing) as info:
        load_fernet_key(tmp_path)
    message = str(info.value)
    assert str(tmp_path / ".kissbot.key") in message
    assert "KissBot would generate a new key" in message
    assert "undecryptable" in message
    assert not (tmp_path / ".kissbot.key").exists()
    assert list(tmp_path.iterdir()) == []


def test_key_that_is_not_fernet(tmp_path: Path) -> None:
    (tmp_path / ".kissbot.key").write_text("SECRET-not-a-fernet-key")
    with pytest.raises(KeyFileError) as info:
        load_fernet_key(tmp_path)
    assert "is not a Fernet key" in str(info.value)
    assert "SECRET-not-a-fernet-key" not in str(info.value)


def test_loose_key_mode_is_a_warning(tmp_path: Path) -> None:
    write_key_file(tmp_path, mode=0o644)
    problems = key_file_problems(tmp_path / ".kissbot.key")
    assert len(problems) == 1
    assert "has mode 0644; it should be 0600" in problems[0]
    load_fernet_key(tmp_path)  # a warning, not a refusal


# --- credential files -----------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_write_credential_modes_whatever_the_umask(tmp_path: Path) -> None:
    directory = tmp_path / "run" / "kissbot" / "creds"
    old = os.umask(0o000)
    try:
        path = write_credential(directory, "token", BOT_SECRET)
    finally:
        os.umask(old)
    assert path == directory / "token"
    assert path.read_text() == BOT_SECRET
    assert mode(path) == 0o600
    for d in (tmp_path / "run", tmp_path / "run" / "kissbot", directory):
        assert mode(d) == 0o700
    assert os.listdir(directory) == ["token"]  # no temporary file left behind


def test_write_credential_replaces_and_tightens_an_existing_directory(tmp_path: Path) -> None:
    directory = tmp_path / "creds"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    write_credential(directory, "token", "first")
    path = write_credential(directory, "token", CASTER_SECRET)
    assert path.read_text() == CASTER_SECRET
    assert mode(directory) == 0o700
    assert os.listdir(directory) == ["token"]


@pytest.mark.parametrize("name", ["", ".", "..", "../token", "a/b"])
def test_write_credential_refuses_names_that_are_not_plain(tmp_path: Path, name: str) -> None:
    with pytest.raises(CredentialFileError, match="is not a plain file name"):
        write_credential(tmp_path / "creds", name, BOT_SECRET)
    assert not (tmp_path / "creds").exists()


def test_remove_credentials(tmp_path: Path) -> None:
    directory = tmp_path / "creds"
    write_credential(directory, "token", BOT_SECRET)
    remove_credentials(directory)
    assert not directory.exists()
    remove_credentials(directory)  # absent is fine
    remove_credentials(tmp_path / "never-was")


def test_report_is_frozen_and_plain() -> None:
    report = TokenReport(TokenState.VALID, "fine", None, "serda_bot")
    with pytest.raises(AttributeError):
        report.state = TokenState.REVOKED  # type: ignore[misc]
    assert report.user_id is None
