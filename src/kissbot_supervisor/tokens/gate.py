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
    CredentialPending,
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
from .worker import (
    CREDENTIAL_NAME,
    Decrypts,
    ask_on_loop,
    ask_worker,
    credential_path,
    credential_request,
    credential_what,
    states_of,
    states_request,
    states_what,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..runtime.child import LoopChild
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


class _Reading:
    """One reading of the token states: :attr:`request`, what to ask the token worker
    (None: nothing, the states come from the config alone), and :meth:`finish`,
    the states from its result. Built and finished on the event loop; the worker
    runs in between, waited for (start-up, reload) or not (a change while the
    fleet runs).

    DB mode: both roles' tokens from the DB. YAML mode: the bots' from
    ``twitch.tokens``; the hub's from the DB all the same, because the hub reads it
    in both modes (the broadcaster token of ``hub.token_login``).
    """

    def __init__(
        self,
        cfg: Config,
        now: float,
        *,
        quick: bool = False,
        verified: dict[str, str | None] | None = None,
    ) -> None:
        s = cfg.settings
        self.cfg = cfg
        self.db = cfg.resolve(s.db)
        self.request: dict[str, Any] | None = None
        self._yaml: DbTokens | None = None
        if s.use_db:
            # In the token worker: the daemon loads neither sqlite3 nor cryptography.
            workdir = cfg.workdir if verified else None
            self.request = states_request(
                self.db,
                cfg.bot_login,
                s.hub_token_login,
                now,
                quick=quick,
                workdir=workdir,
                verified=verified,
            )
            return
        self._yaml = read_yaml_tokens(cfg.document, cfg.config_path, now)
        if s.hub_enabled and self.db.exists():
            self.request = states_request(
                self.db, cfg.bot_login, s.hub_token_login, now, quick=quick
            )

    @property
    def what(self) -> str:
        return "" if self.request is None else states_what(self.request)

    def finish(
        self, result: dict[str, Any] | TokenError | None
    ) -> tuple[DbTokens | None, dict[str, Decrypts]]:
        """The states, and in DB mode whether the tokens of the roles asked about
        decrypt; raises TokenError when the source cannot be read."""
        cfg, s = self.cfg, self.cfg.settings
        if s.use_db:
            assert self.request is not None
            assert result is not None
            if isinstance(result, TokenError):
                raise result
            return states_of(result, self.request)
        if not s.hub_enabled:
            return self._yaml, {}
        login = s.hub_token_login
        bot = self._yaml.bot if self._yaml is not None else None
        if bot is None:
            bot = TokenReport(
                TokenState.UNCHECKED,
                "not checked: YAML token mode without twitch.tokens (the bots use KissBot's "
                "own token files)",
                None,
                cfg.bot_login,
            )
        if self.request is None:
            hub = TokenReport(
                TokenState.UNCHECKED,
                f"not checked: the hub reads the broadcaster token of {login} from {self.db} "
                f"in YAML token mode too, and {self.db} does not exist (KissBot's hub exits 1 "
                "without it)",
                None,
                login,
            )
        else:
            try:
                if isinstance(result, TokenError):
                    raise result
                assert result is not None
                hub = states_of(result, self.request)[0].broadcaster
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


def _read_token_states(
    cfg: Config, now: float, *, quick: bool = False, verified: dict[str, str | None] | None = None
) -> tuple[DbTokens | None, dict[str, Decrypts]]:
    """:func:`read_token_states` waiting for the worker, and in DB mode whether the
    tokens of the roles in ``verified`` decrypt (see :func:`.worker.states_request`)."""
    reading = _Reading(cfg, now, quick=quick, verified=verified)
    result: dict[str, Any] | TokenError | None = None
    if reading.request is not None:
        try:
            result = ask_worker(reading.request, reading.what)
        except TokenError as e:
            result = e
    return reading.finish(result)


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
        self._worker: LoopChild | None = None  # a reading on the loop, while it runs
        self._reading: object | None = None  # one under way (its child may not have started)
        self._again = False  # a change came while it ran: read once more after it
        # Credential files written beside the loop (credential_for with resume):
        # the starts waiting, in order; the worker writing the first one's; and
        # what it answered, for that start's next call.
        self._to_make: dict[str, tuple[Path, Callable[[], None]]] = {}
        self._maker: LoopChild | None = None  # None too when it could not start
        self._making: object | None = None  # one under way
        self._made: dict[str, Path | TokenError | None] = {}
        self._watches: dict[Path, Subscription] = {}
        # YAML mode: the config's token section, read for one burst of starts, then dropped.
        self._yaml_tokens: Mapping[str, object] | None = None
        self.cfg = cfg
        self._configure(cfg)

    # -- configuration -----------------------------------------------------

    def check_config(self, cfg: Config) -> None:
        check_token_source(cfg)

    def update_config(self, cfg: Config) -> None:
        self._cancel_worker()  # it reads for the old config; _configure reads anew
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
        self._refresh_on_loop()

    # -- reading -------------------------------------------------------------

    def _verified(self) -> dict[str, str | None] | None:
        """DB mode: which tokens to check, and what was found to decrypt before."""
        s = self.cfg.settings
        if not s.use_db:
            return None
        roles = ["bot", "broadcaster"] if s.hub_enabled else ["bot"]
        return {role: self._decrypts.get(role) for role in roles}

    def _refresh(self) -> None:
        """Read the states now, waiting for the worker (start-up and reload: the
        config's check has just read the same files)."""
        now = time.time()
        try:
            # One short attempt on a busy DB: a retry is scheduled instead.
            self._take(
                _read_token_states(self.cfg, now, quick=True, verified=self._verified()), now
            )
        except TokenError as e:
            self._unreadable_now(e)

    def _refresh_on_loop(self) -> None:
        """Read the states without waiting: the worker runs beside the loop, and the
        core hears of the result when it comes (a FIFO swapped in for the DB blocks
        the worker until its deadline, not the fleet)."""
        if self._reading is not None:
            self._again = True
            return
        now = time.time()
        try:
            reading = _Reading(self.cfg, now, verified=self._verified())
        except TokenError as e:
            self._unreadable_now(e)
            self._on_change()
            return
        if reading.request is None:
            self._finish(reading, None, now)
            return

        under_way = self._reading = object()

        def done(result: dict[str, Any] | TokenError) -> None:
            if self._reading is not under_way:
                return  # cancelled (a reload reads anew), before its first turn
            self._worker = None
            self._reading = None
            self._finish(reading, result, now)
            if self._again:
                self._again = False
                self._refresh_on_loop()

        self._worker = ask_on_loop(self.loop, reading.request, reading.what, done)

    def _finish(
        self, reading: _Reading, result: dict[str, Any] | TokenError | None, now: float
    ) -> None:
        try:
            self._take(reading.finish(result), now)
        except TokenError as e:
            self._unreadable_now(e)
        self._on_change()

    def _take(self, states: tuple[DbTokens | None, dict[str, Decrypts]], now: float) -> None:
        previous = self._tokens
        self._tokens, decrypts = states
        if self._unreadable is not None:
            self._unreadable = None
            self._log.info("tokens", "token states can be read again")
        if previous != self._tokens:
            self._undecryptable.clear()  # the DB changed: give decryption another chance
        self._take_decrypts(decrypts)
        self._schedule_expiry(now)

    def _unreadable_now(self, e: TokenError) -> None:
        # Said when it starts and when it changes, not at every retry (every
        # BUSY_RETRY_SEC, for as long as a DB stays locked or broken).
        problem = str(e)
        if problem != self._unreadable:
            self._unreadable = problem
            self._log.info("tokens", f"cannot read token states ({problem}); trying again shortly")
        self._schedule(BUSY_RETRY_SEC)

    def child_pids(self) -> set[int]:
        """The token worker reading on the loop, if one runs (the reaper's to spare)."""
        workers = (self._worker, self._maker)
        return {w.pid for w in workers if w is not None and w.pid is not None}

    def _cancel_worker(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        self._reading = None
        self._again = False

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

    def credential_for(
        self, name: str, directory: Path, resume: Callable[[], None] | None = None
    ) -> Path | None:
        """Write ``name``'s token to ``directory/token`` when its role asks for one
        (``bot.credential``, ``hub.credential``) and it has one; the file's path,
        else None. In DB mode the decrypting child writes the file: the daemon
        never holds the plain token.

        With ``resume`` (a start, while the fleet runs), the daemon does not wait
        for that child: CredentialPending is raised, and ``resume`` is called once
        the child has answered; the start's next call then has the answer. One
        child at a time: the starts of a fleet queue up, as they did waited for.

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
        try:
            if name in self._made:
                outcome = self._made.pop(name)
                if isinstance(outcome, TokenError):
                    raise outcome
                return outcome
            if resume is not None:
                self._to_make[name] = (directory, resume)
                self._make_next()
                raise CredentialPending(name)
            request = self._credential_request(name, directory)
            return credential_path(ask_worker(request, credential_what(request)))
        except (UndecryptableToken, KeyFileError) as e:
            # A key file gone or garbled since start-up blocks the start the same
            # way (restarting could not help) until the key file changes again.
            self._undecryptable[role] = mark_undecryptable(report, e)
            self._schedule(0.0)  # let the core see the new gate
            raise

    def _credential_request(self, name: str, directory: Path) -> dict[str, Any]:
        cfg, role = self.cfg, _role(name)
        login = cfg.bot_login if role == "bot" else cfg.settings.hub_token_login
        return credential_request(cfg.resolve(cfg.settings.db), cfg.workdir, login, role, directory)

    def _make_next(self) -> None:
        """Start the worker for the first start waiting for its credential file."""
        if self._making is not None or not self._to_make:
            return
        name, (directory, resume) = next(iter(self._to_make.items()))
        request = self._credential_request(name, directory)
        under_way = self._making = object()

        def done(result: dict[str, Any] | TokenError) -> None:
            if self._making is not under_way:
                return  # cancelled (the supervisor is stopping), before its first turn
            self._maker = self._making = None
            self._to_make.pop(name, None)
            try:
                self._made[name] = (
                    result if isinstance(result, TokenError) else (credential_path(result))
                )
            finally:
                resume()
                self._make_next()

        self._maker = ask_on_loop(self.loop, request, credential_what(request), done)

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
        self._cancel_worker()
        if self._maker is not None:
            self._maker.cancel()
        self._maker = self._making = None
        self._to_make.clear()
        if self._timer is not None:
            self._timer.cancel()
        for sub in self._watches.values():
            self.loop.watches.cancel(sub)
        self._watches.clear()
