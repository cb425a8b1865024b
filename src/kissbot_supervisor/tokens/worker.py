"""The token worker: a short-lived child that reads the token DB and decrypts, so the
daemon loads neither sqlite3 nor cryptography.

A module, once imported, stays for the daemon's whole life: cryptography's
native library is 6.6 MiB and sqlite3 with a connection about 1.5 MiB, and DB
mode cost the supervisor 26 MiB against 16 in YAML mode, to decrypt tokens into
credential files that unmodified KissBot never reads. So the daemon asks a
child (:mod:`..runtime.child`: isolated, empty environment, a few tens of
milliseconds) for what it needs:

* ``states``: the bots' and the hub's token states (:func:`.db.read_db_tokens`,
  one read-only snapshot), and in DB mode whether each usable token decrypts
  with ``.kissbot.key``, so that a wrong key holds a process back with a clear
  reason instead of letting it exit 1 at every start. The daemon sends the
  fingerprint of each token it found to decrypt before; a token whose
  fingerprint is unchanged is not decrypted again (nor cryptography loaded);
* ``credential``: one process's token, decrypted and written to its credential
  file (``bot.credential``, ``hub.credential``): the daemon never holds it.

The child reads the DB (runtime/sqlite_ro.py) and the key file (no symlink, no
FIFO) itself; the request on its stdin carries paths, logins and fingerprints,
never the key or a token. The answer on its stdout is JSON; an error is an
error of :mod:`.states` by its kind and fields, raised again in the daemon with
the same operator sentence. The child is not dumpable and leaves no core file:
it holds the key and a token.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core.records import record
from .states import (
    CredentialFileError,
    DbTokens,
    KeyFileError,
    KeyFileMissing,
    TokenDbBusy,
    TokenDbError,
    TokenError,
    TokenReport,
    TokenState,
    UndecryptableToken,
    blocks_start,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..runtime.child import LoopChild
    from ..runtime.loop import Loop

CREDENTIAL_NAME = "token"  # the file name: systemd's LoadCredential=token:PATH
MAX_REQUEST = 64 * 1024  # paths, logins and fingerprints
ROLES = ("bot", "broadcaster")  # the token_type of each role's row


@record
class Decrypts:
    """Whether a role's token decrypts: ``error`` None when it does."""

    fingerprint: str  # of the encrypted value checked, never of the token
    error: TokenError | None


# --- the daemon's side ------------------------------------------------------------


def ask_worker(request: dict[str, Any], what: str) -> dict[str, Any]:
    """The worker's answer to ``request``, waited for. Raises TokenError."""
    from ..runtime.child import ChildError, run_module

    try:
        answer, code = run_module(__name__, json.dumps(request).encode())
    except ChildError as e:
        raise TokenError(f"{what}: {e}") from None
    return result_of(answer, code, what)


def ask_on_loop(
    loop: Loop,
    request: dict[str, Any],
    what: str,
    done: Callable[[dict[str, Any] | TokenError], None],
) -> LoopChild | None:
    """:func:`ask_worker` without waiting: ``done`` gets the result or the TokenError
    (see :func:`..runtime.child.run_module_on_loop`)."""
    from ..runtime.child import run_module_on_loop

    def finish(answer: bytes, code: int | None, problem: str | None) -> None:
        if problem is not None:
            done(TokenError(f"{what}: {problem}"))
            return
        try:
            result = result_of(answer, code, what)
        except TokenError as e:
            done(e)
            return
        done(result)

    return run_module_on_loop(loop, __name__, json.dumps(request).encode(), finish)


def result_of(answer: bytes, code: int | None, what: str) -> dict[str, Any]:
    """The worker's answer as a dict; raises the TokenError it carries, or one
    saying how it ended without an answer."""
    from ..runtime.child import describe_exit

    try:
        result = json.loads(answer)
    except ValueError:
        result = None
    if not isinstance(result, dict):
        raise TokenError(f"{what}: {describe_exit('the token worker', code)}")
    if "error" in result:
        raise error_from_answer(result["error"])
    return result


def states_request(
    db: Path,
    bot_login: str,
    hub_login: str,
    now: float,
    *,
    quick: bool = False,
    workdir: Path | None = None,
    verified: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """The request for :func:`.db.read_db_tokens` in the worker; with ``workdir`` and
    ``verified`` (role -> fingerprint of the token found to decrypt before, or
    None), also whether those roles' tokens decrypt with ``workdir``'s key."""
    return {
        "op": "states",
        "db": str(db),
        "bot_login": bot_login,
        "hub_login": hub_login,
        "now": now,
        "quick": quick,
        "workdir": None if workdir is None else str(workdir),
        "verified": verified or {},
    }


def states_what(request: dict[str, Any]) -> str:
    return f"token states cannot be read from {request['db']}"


def states_of(
    result: dict[str, Any], request: dict[str, Any]
) -> tuple[DbTokens, dict[str, Decrypts]]:
    """The token states and decryption checks in the worker's ``result``."""
    try:
        tokens = DbTokens(bot=_report(result["bot"]), broadcaster=_report(result["broadcaster"]))
        checks = {
            role: Decrypts(
                str(c["fingerprint"]), None if c["error"] is None else error_from_answer(c["error"])
            )
            for role, c in result["decrypts"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        raise TokenError(f"{states_what(request)}: the worker answered nonsense") from None
    return tokens, checks


def credential_request(
    db: Path, workdir: Path, login: str, role: str, directory: Path
) -> dict[str, Any]:
    """The request for ``role``'s token ('bot' or 'broadcaster') of ``login``,
    decrypted by the worker and written to ``directory/token``."""
    return {
        "op": "credential",
        "db": str(db),
        "workdir": str(workdir),
        "login": login,
        "role": role,
        "directory": str(directory),
    }


def credential_what(request: dict[str, Any]) -> str:
    return f"the {request['role']} token cannot be handed over"


def credential_path(result: dict[str, Any]) -> Path | None:
    """The credential file the worker wrote, or None when the DB has no such token."""
    path = result.get("path")
    return None if path is None else Path(str(path))


# --- across the pipe (pure) ---------------------------------------------------------


def answer_of_report(report: TokenReport) -> dict[str, Any]:
    return {
        "state": str(report.state),
        "reason": report.reason,
        "expires_at": report.expires_at,
        "login": report.login,
        "user_id": report.user_id,
    }


def _report(answer: dict[str, Any]) -> TokenReport:
    expires = answer["expires_at"]
    return TokenReport(
        TokenState(answer["state"]),
        str(answer["reason"]),
        None if expires is None else float(expires),
        None if answer["login"] is None else str(answer["login"]),
        None if answer["user_id"] is None else str(answer["user_id"]),
    )


def answer_of_error(error: TokenError) -> dict[str, Any]:
    """``error`` as the worker's answer: its kind and the fields that rebuild it."""
    if isinstance(error, UndecryptableToken):
        return {"kind": "undecryptable", "problem": error.problem, "what": error.what}
    if isinstance(error, KeyFileMissing):
        return {"kind": "key-missing", "path": str(error.path)}
    if isinstance(error, KeyFileError):
        return {"kind": "key", "path": str(error.path), "problem": error.problem}
    if isinstance(error, CredentialFileError):
        return {"kind": "credential-file", "path": str(error.path), "problem": error.problem}
    if isinstance(error, TokenDbBusy):
        return {
            "kind": "db-busy",
            "path": str(error.path),
            "attempts": error.attempts,
            "waited": error.waited,
        }
    if isinstance(error, TokenDbError):
        return {"kind": "db", "path": str(error.path), "problem": error.problem}
    return {"kind": "other", "message": str(error)}


def error_from_answer(answer: object) -> TokenError:
    """The error the worker described (:func:`answer_of_error`), to be raised again
    with the same words; anything it could not have sent is an error about it."""
    if isinstance(answer, dict):
        kind = answer.get("kind")
        text = {k: v for k, v in answer.items() if isinstance(v, str)}
        try:
            if kind == "undecryptable":
                return UndecryptableToken(text["problem"], text["what"])
            if kind == "key-missing":
                return KeyFileMissing(Path(text["path"]))
            if kind == "key":
                return KeyFileError(Path(text["path"]), text["problem"])
            if kind == "credential-file":
                return CredentialFileError(Path(text["path"]), text["problem"])
            if kind == "db-busy":
                attempts, waited = answer["attempts"], answer["waited"]
                if isinstance(attempts, int) and isinstance(waited, int | float):
                    return TokenDbBusy(Path(text["path"]), attempts, float(waited))
            if kind == "db":
                return TokenDbError(Path(text["path"]), text["problem"])
            if kind == "other":
                return TokenError(text["message"])
        except KeyError:
            pass
    return TokenError("the token worker answered something it cannot have meant")


# --- the child ----------------------------------------------------------------------


def _no_core_dumps() -> None:
    """Neither a core file nor ptrace by the same user: this process holds the key
    and a token (the daemon's own flag does not survive exec)."""
    import resource

    from ..runtime.resources import make_undumpable

    make_undumpable()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _fingerprint(encrypted: str) -> str:
    import hashlib

    return hashlib.sha256(encrypted.encode()).hexdigest()[:32]


class _Key:
    """``.kissbot.key``, read once per worker and only when a token is decrypted."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._key: bytes | None = None

    def decrypt(self, encrypted: str, what: str) -> str:
        from .states import decrypt_token, load_fernet_key

        if self._key is None:
            self._key = load_fernet_key(self.workdir)
        try:
            return decrypt_token(self._key, encrypted, what)
        except ImportError as e:  # a traceback on the daemon's stderr would say less
            raise TokenError(
                f"{what} cannot be decrypted: the cryptography package cannot be loaded "
                f"({e}); install it for the supervisor's Python (python3-cryptography)"
            ) from None


def _states(request: dict[str, Any]) -> dict[str, Any]:
    from .db import DEFAULT_RETRY, DbRetry, TokenType, read_db_secret, read_db_tokens

    db = Path(request["db"])
    retry = DbRetry(attempts=1, busy_timeout=0.2) if request["quick"] else DEFAULT_RETRY
    logins = {"bot": str(request["bot_login"]), "broadcaster": str(request["hub_login"])}
    tokens = read_db_tokens(db, logins["bot"], logins["broadcaster"], request["now"], retry=retry)
    decrypts: dict[str, Any] = {}
    verified = request["verified"] if request["workdir"] is not None else {}
    key = _Key(Path(request["workdir"] or "."))
    for role, known in verified.items():
        report = tokens.bot if role == "bot" else tokens.broadcaster
        if role not in ROLES or blocks_start(report.state):
            continue
        token_type: TokenType = "bot" if role == "bot" else "broadcaster"
        encrypted = read_db_secret(db, logins[role], token_type, retry=retry)
        if encrypted is None:
            continue
        fingerprint = _fingerprint(encrypted)
        error = None
        if fingerprint != known:
            try:
                key.decrypt(encrypted, f"the {role} token")
            except TokenError as e:
                error = answer_of_error(e)
        decrypts[role] = {"fingerprint": fingerprint, "error": error}
    return {
        "bot": answer_of_report(tokens.bot),
        "broadcaster": answer_of_report(tokens.broadcaster),
        "decrypts": decrypts,
    }


def _credential(request: dict[str, Any]) -> dict[str, Any]:
    from .db import TokenType, read_db_secret
    from .states import write_credential

    role = request["role"]
    if role not in ROLES:
        raise TokenError(f"the token worker knows no role {role!r}")
    token_type: TokenType = "bot" if role == "bot" else "broadcaster"
    encrypted = read_db_secret(Path(request["db"]), str(request["login"]), token_type)
    if encrypted is None:
        return {"path": None}
    token = _Key(Path(request["workdir"])).decrypt(encrypted, f"the {role} token")
    return {"path": str(write_credential(Path(request["directory"]), CREDENTIAL_NAME, token))}


def work(raw: bytes) -> dict[str, Any]:
    """The worker's answer to one request (its stdin)."""
    try:
        request = None if len(raw) > MAX_REQUEST else json.loads(raw)
    except ValueError:
        request = None
    if not isinstance(request, dict) or request.get("op") not in ("states", "credential"):
        return {"error": {"kind": "other", "message": "the token worker got a bad request"}}
    try:
        return _states(request) if request["op"] == "states" else _credential(request)
    except TokenError as e:
        return {"error": answer_of_error(e)}
    except (KeyError, TypeError, ValueError) as e:
        message = f"the token worker got a bad request ({type(e).__name__})"
        return {"error": {"kind": "other", "message": message}}


def main() -> None:
    _no_core_dumps()
    sys.stdout.write(json.dumps(work(sys.stdin.buffer.read(MAX_REQUEST + 1))))


if __name__ == "__main__":
    main()
