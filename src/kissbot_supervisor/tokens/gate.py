"""Token states per process, kept current, and the token handed over at start.

Bots use the ``bot`` token of ``bot.name``; the hub a ``broadcaster`` token.
A process whose token is missing, revoked, needs re-authorisation or does not
decrypt is not started (it would exit 1 at every start); once the token is
fixed (a reload, a change to the DB or to ``.kissbot.key``, seen through
inotify) it starts.

Nothing here decrypts: in DB mode a short-lived child (:mod:`.decrypt`) checks
that each token decrypts with the key, once per change of its row or of the
key file, and writes a token to a process's credential file when that
process asks for one (``bot.credential``, ``hub.credential``:
:meth:`TokenGate.credential_for`). The daemon never loads cryptography.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..config.load import Config, ConfigError, load_kissbot_yaml
from ..core import HUB
from ..runtime.inotify import IN_CLOSE_WRITE, IN_CREATE, IN_MODIFY, IN_MOVED_TO, Subscription
from ..runtime.loop import Loop, Timer
from .states import (
    EXPIRING_WITHIN,
    KEY_FILE_NAME,
    DbTokens,
    KeyFileError,
    TokenConfigError,
    TokenDbBusy,
    TokenDbError,
    TokenError,
    TokenReport,
    TokenState,
    UndecryptableToken,
    blocks_start,
    key_file_problems,
    load_fernet_key,
    mark_undecryptable,
    read_yaml_tokens,
    write_credential,
)
from .worker import CREDENTIAL_NAME, Decrypts, read_states_in_child, write_credential_in_child

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..runtime.inotify import Events
    from ..runtime.log import Log

DEBOUNCE_SEC = 1.0  # KissBot writes the DB in bursts; look once they settle
BUSY_RETRY_SEC = 2.0


def _role(name: str) -> str:
    return "broadcaster" if name == HUB else "bot"


def _asks_for_credential(cfg: Config, role: str) -> bool:
    s = cfg.settings
    return s.hub_credential if role == "broadcaster" else s.bot_credential


def read_token_states(cfg: Config, now: float, *, quick: bool = False) -> DbTokens | None:
    """The bots' and the hub's tokens, where KissBot's programs take them; None when
    there is nothing to check (YAML mode without ``twitch.tokens``, no hub).

    DB mode: both from the DB. YAML mode: the bots' from ``twitch.tokens``; the
    hub's from the DB all the same, because the hub reads it in both modes (the
    broadcaster token of ``hub.token_login``). ``quick``: one short attempt on a
    busy DB (the event loop must not sleep; the caller retries).
    Raises TokenError when the source cannot be read.
    """
    return _read_token_states(cfg, now, quick=quick)[0]


def _read_token_states(
    cfg: Config, now: float, *, quick: bool = False, verified: dict[str, str | None] | None = None
) -> tuple[DbTokens | None, dict[str, Decrypts]]:
    """:func:`read_token_states`, and in DB mode whether the tokens of the roles in
    ``verified`` decrypt (see :func:`.worker.read_states_in_child`)."""
    s = cfg.settings
    db = cfg.resolve(s.db)

    def from_db(login: str) -> tuple[DbTokens, dict[str, Decrypts]]:
        # In the token worker: the daemon loads neither sqlite3 nor cryptography.
        workdir = cfg.workdir if s.use_db and verified else None
        return read_states_in_child(
            db, cfg.bot_login, login, now, quick=quick, workdir=workdir, verified=verified
        )

    if s.use_db:
        return from_db(s.hub_token_login)
    yaml_tokens = read_yaml_tokens(cfg.document, cfg.config_path, now)
    if not s.hub_enabled:
        return yaml_tokens, {}
    login = s.hub_token_login
    bot = yaml_tokens.bot if yaml_tokens is not None else None
    if bot is None:
        bot = TokenReport(
            TokenState.UNCHECKED,
            "not checked: YAML token mode without twitch.tokens (the bots use KissBot's "
            "own token files)",
            None,
            cfg.bot_login,
        )
    if not db.exists():
        hub = TokenReport(
            TokenState.UNCHECKED,
            f"not checked: the hub reads the broadcaster token of {login} from {db} in YAML "
            f"token mode too, and {db} does not exist (KissBot's hub exits 1 without it)",
            None,
            login,
        )
    else:
        try:
            hub = from_db(login)[0].broadcaster
        except TokenDbBusy:
            raise
        except TokenDbError as e:  # the bots' tokens (YAML) are still worth showing
            hub = TokenReport(
                TokenState.UNCHECKED,
                f"not checked: the hub reads its token from the token DB, and {e}",
                None,
                login,
            )
    return DbTokens(bot=bot, broadcaster=hub), {}


def check_token_source(cfg: Config) -> None:
    """Errors that must stop a start or a reload, as ConfigError."""
    s = cfg.settings
    if s.use_db:
        try:
            load_fernet_key(cfg.workdir)
        except KeyFileError as e:
            raise ConfigError(str(cfg.workdir / KEY_FILE_NAME), None, str(e)) from None
        db = cfg.resolve(s.db)
        if not db.exists():
            raise ConfigError(
                s.db, None, f"the token DB does not exist (looked in {db}); check --db"
            )
    else:
        try:
            read_yaml_tokens(cfg.document, cfg.config_path, time.time())
        except TokenConfigError as e:
            raise ConfigError(str(cfg.config_path), e.key, e.problem) from None


class TokenGate:
    def __init__(
        self,
        cfg: Config,
        loop: Loop,
        on_change: Callable[[], None],
        log: Log,
    ) -> None:
        self.loop = loop
        self._on_change = on_change
        self._log = log
        self._tokens: DbTokens | None = None
        self._undecryptable: dict[str, TokenReport] = {}
        # role -> fingerprint of the encrypted value the worker found to decrypt with
        # the key at hand: decrypted again only when the row or the key file changes.
        self._decrypts: dict[str, str] = {}
        self._timer: Timer | None = None
        self._unreadable: str | None = None  # the last reading's problem, said once
        self._watches: dict[Path, Subscription] = {}
        # YAML mode: the config's token section, read for one burst of starts, then dropped.
        self._yaml_tokens: Mapping[str, object] | None = None
        self.cfg = cfg
        self._configure(cfg)

    # -- configuration -----------------------------------------------------

    def check_config(self, cfg: Config) -> None:
        check_token_source(cfg)

    def update_config(self, cfg: Config) -> None:
        self.cfg = cfg
        self._undecryptable.clear()
        self._decrypts.clear()
        self._configure(cfg)

    def _configure(self, cfg: Config) -> None:
        if cfg.settings.use_db:
            for problem in key_file_problems(cfg.workdir / KEY_FILE_NAME):
                self._log.info("tokens", problem)
            self._watch(cfg.workdir)
        if cfg.settings.use_db or cfg.settings.hub_enabled:  # the hub's token is in the DB
            self._watch(cfg.resolve(cfg.settings.db).parent)
        self._refresh()

    def _watch(self, directory: Path) -> None:
        if directory in self._watches:
            return
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO
        try:
            self._watches[directory] = self.loop.watches.subscribe(directory, mask, self._on_files)
        except OSError as e:
            self._log.info("tokens", f"cannot watch {directory} for token changes: {e.strerror}")

    def _on_files(self, events: Events) -> None:
        db = self.cfg.resolve(self.cfg.settings.db).name
        relevant = {db, f"{db}-wal", KEY_FILE_NAME}
        # An overflow (no watch) may have hidden anything, the key file included.
        names = {
            KEY_FILE_NAME if n is None else n for n, _m in events if n is None or n in relevant
        }
        if KEY_FILE_NAME in names:
            # Another key: a token that did not decrypt may now (the DB is unchanged,
            # so _refresh alone would keep it blocked until a reload).
            self._undecryptable.clear()
            self._decrypts.clear()
        if names:
            self._schedule(DEBOUNCE_SEC)

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            if self._timer.when <= self.loop.now() + delay:
                return
            self._timer.cancel()
        self._timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._refresh()
        self._on_change()

    # -- reading -------------------------------------------------------------

    def _refresh(self) -> None:
        cfg, now = self.cfg, time.time()
        previous = self._tokens
        try:
            # One short attempt: the event loop must not sleep on a busy DB; a
            # retry is scheduled instead.
            verified = None
            if cfg.settings.use_db:  # which tokens to check, and what was found to decrypt
                roles = ["bot", "broadcaster"] if cfg.settings.hub_enabled else ["bot"]
                verified = {role: self._decrypts.get(role) for role in roles}
            self._tokens, decrypts = _read_token_states(cfg, now, quick=True, verified=verified)
        except TokenError as e:
            # Said when it starts and when it changes, not at every retry (every
            # BUSY_RETRY_SEC, for as long as a DB stays locked or broken).
            problem = str(e)
            if problem != self._unreadable:
                self._unreadable = problem
                self._log.info(
                    "tokens", f"cannot read token states ({problem}); trying again shortly"
                )
            self._schedule(BUSY_RETRY_SEC)
            return
        if self._unreadable is not None:
            self._unreadable = None
            self._log.info("tokens", "token states can be read again")
        if previous != self._tokens:
            self._undecryptable.clear()  # the DB changed: give decryption another chance
        self._take_decrypts(decrypts)
        self._schedule_expiry(now)

    def _take_decrypts(self, decrypts: dict[str, Decrypts]) -> None:
        """DB mode: the worker's word on whether each token decrypts with the key. A
        wrong key holds the process back with the worker's sentence (KissBot would
        exit 1 at every start), until the row or the key file changes."""
        for role, found in decrypts.items():
            if found.error is None:
                self._decrypts[role] = found.fingerprint
                continue
            self._decrypts.pop(role, None)
            report = self._report_of(role)
            if report is not None and role not in self._undecryptable:
                self._undecryptable[role] = mark_undecryptable(report, found.error)
                self._log.info(
                    "tokens", f"{found.error} (its processes are held back until it is fixed)"
                )

    def _schedule_expiry(self, now: float) -> None:
        """Wake up when a token turns expiring or expired, and not otherwise."""
        if self._tokens is None:
            return
        moments = []
        for report in (self._tokens.bot, self._tokens.broadcaster):
            if report.expires_at is not None:
                moments += [report.expires_at - EXPIRING_WITHIN, report.expires_at]
        future = [t for t in moments if t > now]
        if future:
            self._schedule(min(future) - now + 0.5)

    def report(self, name: str) -> TokenReport | None:
        return self._report_of(_role(name))

    def _report_of(self, role: str) -> TokenReport | None:
        if role in self._undecryptable:
            return self._undecryptable[role]
        if self._tokens is None:
            return None
        return self._tokens.bot if role == "bot" else self._tokens.broadcaster

    def gate(self, name: str) -> tuple[str, str | None]:
        """(token state, reason it may not start or None) for one process."""
        report = self.report(name)
        if report is None:
            return str(TokenState.UNCHECKED), None
        blocked = blocks_start(report.state) or report.state is TokenState.UNDECRYPTABLE
        return str(report.state), report.reason if blocked else None

    def expiry(self, name: str) -> float | None:
        report = self.report(name)
        return None if report is None else report.expires_at

    # -- handing a token over ------------------------------------------------

    def credential_for(self, name: str, directory: Path) -> Path | None:
        """Write ``name``'s token to ``directory/token`` when its role asks for one
        (``bot.credential``, ``hub.credential``) and it has one; the file's path,
        else None. In DB mode the decrypting child writes the file: the daemon
        never holds the plain token.

        Raises TokenError (never holding the secret) when it cannot be had.
        """
        cfg = self.cfg
        role = _role(name)
        if not _asks_for_credential(cfg, role):
            return None
        report = self.report(name)
        if report is None or report.login is None or blocks_start(report.state):
            return None
        if not cfg.settings.use_db:
            token = self._yaml_secret(report.login)
            return None if token is None else write_credential(directory, CREDENTIAL_NAME, token)
        login = cfg.bot_login if role == "bot" else cfg.settings.hub_token_login
        try:
            return write_credential_in_child(
                cfg.resolve(cfg.settings.db), cfg.workdir, login, role, directory
            )
        except (UndecryptableToken, KeyFileError) as e:
            # A key file gone or garbled since start-up blocks the start the same
            # way (restarting could not help) until the key file changes again.
            self._undecryptable[role] = mark_undecryptable(report, e)
            self._schedule(0.0)  # let the core see the new gate
            raise

    def _yaml_secret(self, login: str) -> str | None:
        """The token text, read from the config file again (the loaded config holds
        none: config/load.py), kept only until the current burst of starts is over."""
        if self._yaml_tokens is None:
            try:
                document = load_kissbot_yaml(
                    self.cfg.workdir, self.cfg.config_path, isolate=True
                ).document
            except ConfigError as e:
                raise TokenError(f"the token cannot be read again: {e}") from None
            twitch = document.get("twitch")
            tokens = twitch.get("tokens") if isinstance(twitch, Mapping) else None
            self._yaml_tokens = tokens if isinstance(tokens, Mapping) else {}
            self.loop.call_later(0.0, self._forget_yaml_tokens)
        for raw_login, entry in self._yaml_tokens.items():
            if str(raw_login).strip().lower() == login and isinstance(entry, Mapping):
                token = entry.get("access_token")
                return token if isinstance(token, str) and token.strip() else None
        return None

    def _forget_yaml_tokens(self) -> None:
        self._yaml_tokens = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sub in self._watches.values():
            self.loop.watches.cancel(sub)
        self._watches.clear()
