"""Token states of the supervised processes, and the secrets they are made from.

The supervisor decides for each process (one bot per channel, plus the
optional EventSub hub) a :class:`TokenState`, from one of two sources:

* DB mode (``--use-db``): rows of KissBot's ``kissbot.db``, read by
  :mod:`.tokendb` (which uses :func:`assess_stored_token` here to judge a row);
* YAML mode: the ``twitch.tokens`` section of the config file
  (:func:`read_yaml_tokens`); with no such section every process is
  ``unchecked``.

This module also holds the only code that touches a secret: loading the
Fernet key (:func:`load_fernet_key`), decrypting one token
(:func:`decrypt_token`, run only in the short-lived child of :mod:`.decrypt`:
the daemon never loads cryptography) and writing it to a credential file for
a process (:func:`write_credential`). Nothing else here ever holds a token:
reports, exceptions and their reprs carry logins, states and reasons only.

Why one module of 600 lines: the judgement of a token (valid, expired,
revoked, undecryptable) is the same for the DB and the YAML config, and the
secrets it is made from are handled in one place on purpose (the one module
that touches a token's text); the DB reading itself is in ``db``.
"""

from __future__ import annotations

import contextlib
import enum
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from ..core.records import record, replace
from ..kissbot.names import DEFAULT_BOT_LOGIN, login_of
from ..runtime.fs import read_regular

# Under an hour left is worth showing (and a metric); the caller re-checks at
# expires_at to learn whether KissBot refreshed the token in time.
EXPIRING_WITHIN = 3600.0
KEY_FILE_NAME = ".kissbot.key"
REAUTH_HINT = "re-authorise it with KissBot's OAuth flow"
# KissBot stores datetime objects through sqlite3's default adapter, which
# drops the fraction when it is zero; the 'T' forms come from hand edits.
_EXPIRES_FORMATS = (
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
)


class TokenState(enum.StrEnum):
    """What the supervisor knows about the token a process needs (wire values)."""

    VALID = "valid"
    EXPIRING = "expiring"  # expires within EXPIRING_WITHIN seconds
    EXPIRED = "expired"  # KissBot may still refresh it at start
    NEEDS_REAUTH = "needs-reauth"
    REVOKED = "revoked"
    MISSING = "missing"
    UNDECRYPTABLE = "undecryptable"
    UNCHECKED = "unchecked"  # no token source configured


_BLOCKING = frozenset({TokenState.NEEDS_REAUTH, TokenState.REVOKED, TokenState.MISSING})


def blocks_start(state: TokenState) -> bool:
    """True when the program would exit 1 at every start, so starting it is pointless."""
    return state in _BLOCKING


@record
class TokenReport:
    """The verdict on one token. Never holds a secret, so it may be logged and shown."""

    state: TokenState
    reason: str  # a sentence for the operator: which token, where, what to do
    expires_at: float | None  # unix time; lets the caller re-check when expiring turns expired
    login: str | None  # the Twitch login the token belongs to, when known
    user_id: str | None = None  # the Twitch user id, when known (pins the hub's broadcaster)


@record
class DbTokens:
    """The two tokens the supervisor cares about: the bots' and the hub's."""

    bot: TokenReport
    broadcaster: TokenReport


def mark_undecryptable(report: TokenReport, error: TokenError) -> TokenReport:
    """The same token, now known not to decrypt with the key at hand (or without one:
    a :class:`KeyFileError`)."""
    return replace(report, state=TokenState.UNDECRYPTABLE, reason=str(error))


# --- errors ---------------------------------------------------------------------------


class TokenError(Exception):
    """Base of every error of this module and of :mod:`.tokendb`."""


class CredentialPending(Exception):
    """A process's credential file is being written beside the event loop (the token
    worker may be slow, or stuck on a file the bots swapped); its start is tried
    again when the ``resume`` given to the gate is called."""


class TokenDbError(TokenError):
    """The token database cannot be used; ``path`` and ``problem`` say why."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"token database {path}: {problem}")
        self.path = path
        self.problem = problem


class TokenDbNotFound(TokenDbError):
    """The database file does not exist (the supervisor never creates it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            "the file does not exist; the supervisor opens it read-only and never creates "
            "it. Check --db and the KissBot working directory, or create the database "
            "with KissBot's database/init_db.py",
        )


class TokenDbBusy(TokenDbError):
    """Another process kept the database locked through every attempt."""

    def __init__(self, path: Path, attempts: int, waited: float) -> None:
        super().__init__(
            path,
            f"still locked by another process after {attempts} attempts over about "
            f"{waited:.1f} s (KissBot may be in a long write or a migration); look for the "
            f"holder with 'fuser {path}' and try again",
        )
        self.attempts = attempts
        self.waited = waited


class TokenDbSchemaError(TokenDbError):
    """The file is SQLite but not a KissBot token database we know."""

    def __init__(self, path: Path, missing: tuple[str, ...]) -> None:
        super().__init__(
            path,
            f"not a KissBot token database of a known schema: missing {', '.join(missing)} "
            "(expected tables users and oauth_tokens as written by KissBot)",
        )
        self.missing = missing


class TokenConfigError(TokenError):
    """A token-related part of the YAML config is malformed."""

    def __init__(self, path: Path, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem


class KeyFileError(TokenError):
    """The Fernet key file cannot be used."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class KeyFileMissing(KeyFileError):
    """No key file: refuse rather than let KissBot generate a new one."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            "the Fernet key file does not exist. KissBot would generate a new key at start "
            "and every token stored in the database would become undecryptable, so the "
            "supervisor refuses to go on. Restore the key file from a backup (mode 0600)",
        )


class UndecryptableToken(TokenError):
    """A stored token does not decrypt; ``problem`` says why, never what it holds."""

    def __init__(self, problem: str, what: str = "a stored token") -> None:
        super().__init__(
            f"{what} cannot be decrypted: {problem}. Either .kissbot.key is not the key the "
            f"token was stored with (restore the right key) or the token must be re-authorised "
            f"with KissBot's OAuth flow"
        )
        self.problem = problem
        self.what = what


class CredentialFileError(TokenError):
    """A credential file or its directory cannot be written safely."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


# --- judging a stored token (pure) ----------------------------------------------------


def parse_expires_at(value: object) -> float | None:
    """KissBot's naive-local ``expires_at`` text as unix time; None when unreadable."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    for fmt in _EXPIRES_FORMATS:
        try:
            # Naive on purpose: KissBot writes datetime.now()-based local time.
            from datetime import datetime  # lazy: DB mode only

            return datetime.strptime(text, fmt).timestamp()
        except ValueError:
            continue
    return None


def _local(ts: float) -> str:
    from datetime import datetime  # lazy: DB mode only

    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def assess_stored_token(
    *,
    subject: str,
    source: str,
    needs_reauth: bool,
    status: str | None,
    expires_at: object,
    now: float,
    login: str | None,
    user_id: str | None,
    refresh_failures: int | None = None,
) -> TokenReport:
    """Judge one token row; ``subject`` is e.g. "bot token of serda_bot".

    The order is KissBot's own: a row flagged for re-authorisation or revoked
    makes it refuse to start whatever its expiry says; an expired one it
    tries to refresh; only then does the time left matter.
    """
    expires = parse_expires_at(expires_at)

    def report(state: TokenState, reason: str) -> TokenReport:
        return TokenReport(state, reason, expires, login, user_id)

    if needs_reauth:
        failures = f" after {refresh_failures} failed refreshes" if refresh_failures else ""
        return report(
            TokenState.NEEDS_REAUTH,
            f"{subject} is flagged needs_reauth{failures} in {source}; {REAUTH_HINT}",
        )
    if status == "revoked":
        return report(TokenState.REVOKED, f"{subject} is revoked in {source}; {REAUTH_HINT}")
    if status == "expired":
        return report(
            TokenState.EXPIRED,
            f"{subject} is marked expired in {source}; KissBot will try its refresh token at "
            f"start, and if that fails, {REAUTH_HINT}",
        )
    if expires is None:
        return report(
            TokenState.EXPIRED,
            f"{subject} has an unreadable expires_at {expires_at!r:.60} in {source} (expected "
            "'YYYY-MM-DD HH:MM:SS[.ffffff]' local time); treating it as expired",
        )
    if expires <= now:
        return report(
            TokenState.EXPIRED,
            f"{subject} expired at {_local(expires)} local time ({source}); KissBot will try "
            f"its refresh token at start, and if that fails, {REAUTH_HINT}",
        )
    if expires - now < EXPIRING_WITHIN:
        minutes = max(1, round((expires - now) / 60))
        return report(
            TokenState.EXPIRING,
            f"{subject} expires in {minutes} min, at {_local(expires)} local time ({source}); "
            "unless KissBot refreshes it before then, it turns expired",
        )
    return report(TokenState.VALID, f"{subject} is valid until {_local(expires)} local time")


# --- YAML mode ------------------------------------------------------------------------


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    kinds: tuple[tuple[type, str], ...] = (
        (Mapping, "a mapping"),
        (list, "a list"),
        (str, "text"),
        (int, "a number"),
        (float, "a number"),
    )
    for kind, name in kinds:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _section(value: object, path: Path, key: str) -> Mapping[object, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TokenConfigError(path, key, f"expected a mapping, got {_describe(value)}")
    return value


def _id_text(value: object, path: Path, key: str) -> str | None:
    """A Twitch user id, which YAML turns into a number when unquoted."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TokenConfigError(
            path, key, f"expected a Twitch user id (digits), got {_describe(value)}"
        )
    return str(value).strip()


def config_bot_login(config: Mapping[str, object], config_path: Path) -> str:
    """``bot.name`` lowercased (KissBot stores logins lowercased), by the login rule
    the config is read with (:func:`.names.login_of`); KissBot's default when unset."""
    name = _section(config.get("bot"), config_path, "bot").get("name", DEFAULT_BOT_LOGIN)
    login = login_of(name) if isinstance(name, str) else None
    if login is None:
        raise TokenConfigError(
            config_path, "bot.name", f"expected the bot account's login, got {_describe(name)}"
        )
    return login


def config_broadcaster_id(config: Mapping[str, object], config_path: Path) -> str | None:
    """``twitch.broadcaster_id`` as text, or None when unset."""
    twitch = _section(config.get("twitch"), config_path, "twitch")
    return _id_text(twitch.get("broadcaster_id"), config_path, "twitch.broadcaster_id")


@record
class _YamlEntry:
    login: str
    user_id: str | None
    has_access_token: bool


def _yaml_entries(tokens: Mapping[object, object], path: Path) -> list[_YamlEntry]:
    entries = []
    for raw_login, entry in tokens.items():
        login = str(raw_login).strip().lower()
        key = f"twitch.tokens.{raw_login}"
        if not isinstance(entry, Mapping):
            # Only the type is named: a bare string here may well be the token itself.
            raise TokenConfigError(
                path, key, f"expected a mapping with access_token, got {_describe(entry)}"
            )
        for field in ("access_token", "refresh_token"):
            value = entry.get(field)
            if value is not None and not isinstance(value, str):
                raise TokenConfigError(
                    path, f"{key}.{field}", f"expected text, got {_describe(value)}"
                )
        access = entry.get("access_token")
        entries.append(
            _YamlEntry(
                login=login,
                user_id=_id_text(entry.get("user_id"), path, f"{key}.user_id"),
                has_access_token=isinstance(access, str) and bool(access.strip()),
            )
        )
    return entries


def _yaml_report(entry: _YamlEntry, subject: str, path: Path) -> TokenReport:
    where = f"{path} (twitch.tokens.{entry.login})"
    if not entry.has_access_token:
        return TokenReport(
            TokenState.MISSING,
            f"{subject} has an empty access_token in {where}; {REAUTH_HINT} and put the "
            "new token there",
            None,
            entry.login,
            entry.user_id,
        )
    return TokenReport(
        TokenState.VALID,
        f"{subject} is present in {where}; YAML tokens carry no expiry, so it is not "
        "checked further",
        None,
        entry.login,
        entry.user_id,
    )


def read_yaml_tokens(
    config: Mapping[str, object], config_path: Path, now: float
) -> DbTokens | None:
    """Token states from ``twitch.tokens``; None when that section is absent or empty.

    ``now`` is unused (YAML tokens carry no expiry) but kept so both modes
    are called alike.
    """
    del now
    twitch = _section(config.get("twitch"), config_path, "twitch")
    raw_tokens = twitch.get("tokens")
    if raw_tokens is not None and not isinstance(raw_tokens, Mapping):
        raise TokenConfigError(
            config_path,
            "twitch.tokens",
            f"expected a mapping of login to token entries, got {_describe(raw_tokens)}",
        )
    if not raw_tokens:
        return None
    entries = _yaml_entries(raw_tokens, config_path)
    bot_login = config_bot_login(config, config_path)
    broadcaster_id = config_broadcaster_id(config, config_path)

    bot_entry = next((e for e in entries if e.login == bot_login), None)
    if bot_entry is None:
        bot = TokenReport(
            TokenState.MISSING,
            f"no bot token for {bot_login} in {config_path}: twitch.tokens has no entry "
            f"{bot_login} (bot.name); {REAUTH_HINT} and add it",
            None,
            bot_login,
        )
    else:
        bot = _yaml_report(bot_entry, f"bot token of {bot_login}", config_path)

    if broadcaster_id is not None:
        found = next((e for e in entries if e.user_id == broadcaster_id), None)
        missing_why = (
            f"no entry in twitch.tokens has user_id {broadcaster_id} (twitch.broadcaster_id)"
        )
    else:
        others = [e for e in entries if e.login != bot_login]
        # Prefer an entry with a token: an empty one is only a placeholder.
        found = next((e for e in others if e.has_access_token), others[0] if others else None)
        missing_why = f"twitch.tokens has no entry besides the bot's ({bot_login})"
    if found is None:
        broadcaster = TokenReport(
            TokenState.MISSING,
            f"no broadcaster token in {config_path}: {missing_why}; {REAUTH_HINT}",
            None,
            None,
            broadcaster_id,
        )
    else:
        broadcaster = _yaml_report(found, f"broadcaster token of {found.login}", config_path)
    return DbTokens(bot=bot, broadcaster=broadcaster)


# --- the key and decryption -----------------------------------------------------------


def key_file_problems(path: Path) -> list[str]:
    """Warnings about the key file's safety (empty when fine); never fatal by themselves."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return [f"{path} does not exist"]
    except OSError as e:
        return [f"{path} cannot be examined ({e.strerror})"]
    problems = []
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        problems.append(
            f"{path} has mode {mode:04o}; it should be 0600 (chmod 600 {path}) because it "
            "decrypts every token in the database"
        )
    return problems


MAX_KEY_FILE = 4096  # a Fernet key is 44 bytes; anything much bigger is not one


def is_fernet_key(key: bytes) -> bool:
    """Whether ``key`` may be a Fernet key: 43 base64 characters (32 bytes), padding,
    newlines and the like set aside. Checked without cryptography: the daemon
    checks the key at every start and reload, and cryptography's native library
    would cost it 6.6 MiB for good (tests/import_budget.py).

    Lenient on purpose: never refuse a key that some version of Fernet takes
    (cryptography 38, Debian's, decodes leniently in Python; 51 strictly in
    Rust, without padding). A key this lets pass and Fernet refuses is found by
    the token worker (tokens/worker.py), which decrypts with Fernet itself, and
    holds the processes back with that reason."""
    return sum(1 for b in key if b in _BASE64_CHARACTERS) == 43


_BASE64_CHARACTERS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/"
)


def load_fernet_key(workdir: Path) -> bytes:
    """The raw content of ``WORKDIR/.kissbot.key``, checked to be a Fernet key.

    Returned as read, trailing newline and all, because that is what KissBot
    hands to Fernet (which tolerates it).
    """
    path = workdir / KEY_FILE_NAME
    try:
        key = read_regular(path, MAX_KEY_FILE, base=workdir)  # no FIFO, no symlink
    except FileNotFoundError:
        raise KeyFileMissing(path) from None
    except OSError as e:
        raise KeyFileError(path, f"cannot be read ({e.strerror})") from None
    if not is_fernet_key(key):
        # The message must not quote the content: it is (nearly) the key.
        raise KeyFileError(path, "is not a Fernet key (expected 44 characters of url-safe base64)")
    return key


def decrypt_token(key: bytes, encrypted_b64: str, what: str = "a stored token") -> str:
    """Decrypt one ``*_encrypted`` column value: standard base64 of a Fernet token.

    The only function here that returns a secret. ``what`` (e.g. "bot token of
    serda_bot") goes into the error, which never contains the token or key.
    """
    import base64  # lazy, like everything decryption needs
    import binascii

    from cryptography.fernet import Fernet, InvalidToken

    try:
        fernet = Fernet(key)
    except (ValueError, TypeError):
        raise UndecryptableToken("the key is not a Fernet key", what) from None
    try:
        raw = base64.b64decode(encrypted_b64.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise UndecryptableToken("the stored value is not base64", what) from None
    try:
        return fernet.decrypt(raw).decode("utf-8")
    except InvalidToken:
        raise UndecryptableToken("wrong key or damaged value", what) from None
    except UnicodeDecodeError:
        raise UndecryptableToken("it decrypts to something that is not text", what) from None


# --- credential files for children ----------------------------------------------------


def _make_private_dir(directory: Path) -> None:
    """Create ``directory`` and missing parents with mode 0700, whatever the umask."""
    missing = []
    p = directory
    while not p.exists() and not p.is_symlink():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass  # created meanwhile by someone else; checked below for the leaf
        else:
            os.chmod(d, 0o700)  # mkdir's mode is filtered through the umask
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise CredentialFileError(directory, "exists and is not a directory (or is a symlink)")
    if st.st_uid != os.geteuid():
        raise CredentialFileError(
            directory, f"is owned by uid {st.st_uid}, not by the supervisor (uid {os.geteuid()})"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(directory, 0o700)


def write_credential(directory: Path, name: str, secret: str) -> Path:
    """Write ``secret`` to ``directory/name`` atomically, mode 0600 in a 0700 directory."""
    if not name or name in {".", ".."} or "/" in name or "\0" in name:
        raise CredentialFileError(directory, f"{name!r} is not a plain file name")
    _make_private_dir(directory)
    final = directory / name
    tmp = directory / f".{name}.{os.getpid()}.{os.urandom(8).hex()}.tmp"
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as e:
        raise CredentialFileError(tmp, f"cannot be created ({e.strerror})") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask may have taken bits away
            data = memoryview(secret.encode("utf-8"))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CredentialFileError(final, f"cannot be written ({e.strerror})") from None
    return final


def remove_credentials(directory: Path) -> None:
    """Remove the credential directory and what it holds; absent is fine."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                import shutil  # lazy: shutil pulls in compression modules the daemon never needs

                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            pass  # removed meanwhile: the goal is reached
    with contextlib.suppress(FileNotFoundError):
        directory.rmdir()
