"""Decrypting a stored token in a short-lived child, so the daemon never loads cryptography.

cryptography's native library costs a process 6.6 MiB of resident memory, and a
module once imported stays for the daemon's whole life: DB mode cost the
supervisor 26 MiB against 16 in YAML mode, for tokens that unmodified KissBot
never reads from a credential file. So the daemon judges token states from
the DB without decrypting anything, and a child (:mod:`..runtime.child`:
isolated, empty environment) does the decrypting:

* to *check* that a token decrypts with ``.kissbot.key`` (the token gate does
  it when the token row or the key file changes, so that a wrong key holds a
  process back with a clear reason instead of letting it exit 1 at every
  start), answering only yes or why not;
* to *hand it over* (``bot.credential``, ``hub.credential``), writing the
  plain token straight to the process's credential file: the daemon never
  holds it.

The request, on the child's stdin, is JSON ``{"workdir", "encrypted", "what",
"directory"}``: the still-encrypted column value (never the key, which the
child reads itself from the workdir by the hostile-workdir rule: no symlink,
no FIFO), the words naming the token in errors, and the credential directory
or null for a check. The answer, on stdout: ``{"path": PATH or null}`` or
``{"error": {...}}``, an error of :mod:`.states` by its kind and fields, raised
again in the daemon with the same operator sentence. The child is not
dumpable and may leave no core file: it holds the key and the token.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .states import (
    CredentialFileError,
    KeyFileError,
    KeyFileMissing,
    TokenError,
    UndecryptableToken,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CREDENTIAL_NAME = "token"  # the file name: systemd's LoadCredential=token:PATH
MAX_REQUEST = 64 * 1024  # a Fernet token of an OAuth token is a few hundred bytes


def decrypt_in_child(
    workdir: Path, encrypted: str, what: str, directory: Path | None = None
) -> Path | None:
    """Check that ``encrypted`` decrypts with ``workdir``'s key (``directory`` None),
    or write it decrypted to ``directory/token``; that file's path, or None for a check.

    Raises :class:`.UndecryptableToken`, :class:`.KeyFileError` (a
    :class:`.KeyFileMissing`), :class:`.CredentialFileError` as the child found
    them, or :class:`.TokenError` when the child could not do its work at all.
    """
    from ..runtime.child import ChildError, describe_exit, run_module

    request = {
        "workdir": str(workdir),
        "encrypted": encrypted,
        "what": what,
        "directory": None if directory is None else str(directory),
    }
    try:
        answer, code = run_module(__name__, json.dumps(request).encode())
    except ChildError as e:
        raise TokenError(f"{what} cannot be decrypted: {e}") from None
    try:
        result = json.loads(answer)
    except ValueError:
        result = None
    if not isinstance(result, dict):
        raise TokenError(
            f"{what} cannot be decrypted: {describe_exit('the decrypting child', code)}"
        )
    if "error" in result:
        raise error_from_answer(result["error"])
    path = result.get("path")
    return None if path is None else Path(path)


# --- errors across the pipe (pure) ------------------------------------------------


def answer_of_error(error: TokenError) -> dict[str, Any]:
    """``error`` as the child's answer: its kind and the fields that rebuild it."""
    if isinstance(error, UndecryptableToken):
        return {"kind": "undecryptable", "problem": error.problem, "what": error.what}
    if isinstance(error, KeyFileMissing):
        return {"kind": "key-missing", "path": str(error.path)}
    if isinstance(error, KeyFileError):
        return {"kind": "key", "path": str(error.path), "problem": error.problem}
    if isinstance(error, CredentialFileError):
        return {"kind": "credential-file", "path": str(error.path), "problem": error.problem}
    return {"kind": "other", "message": str(error)}


def error_from_answer(answer: object) -> TokenError:
    """The error the child described (:func:`answer_of_error`), to be raised again;
    anything it could not have sent is an error about the child itself."""
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
            if kind == "other":
                return TokenError(text["message"])
        except KeyError:
            pass
    return TokenError("the decrypting child answered something it cannot have meant")


# --- the child ----------------------------------------------------------------------


def _no_core_dumps() -> None:
    """Neither a core file nor ptrace by the same user: this process holds the key
    and a token (the daemon's own flag does not survive exec)."""
    import resource

    from ..runtime.resources import make_undumpable

    make_undumpable()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _work(request: object) -> dict[str, Any]:
    from .states import decrypt_token, load_fernet_key, write_credential

    if not isinstance(request, dict):
        return {"error": {"kind": "other", "message": "the decrypting child got no request"}}
    workdir, encrypted = request.get("workdir"), request.get("encrypted")
    what, directory = request.get("what"), request.get("directory")
    if not (
        isinstance(workdir, str)
        and isinstance(encrypted, str)
        and isinstance(what, str)
        and (directory is None or isinstance(directory, str))
    ):
        return {"error": {"kind": "other", "message": "the decrypting child got a bad request"}}
    try:
        token = decrypt_token(load_fernet_key(Path(workdir)), encrypted, what)
        if directory is None:
            return {"path": None}
        return {"path": str(write_credential(Path(directory), CREDENTIAL_NAME, token))}
    except TokenError as e:
        return {"error": answer_of_error(e)}
    except ImportError as e:  # a traceback on the daemon's stderr would say less
        message = (
            f"{what} cannot be decrypted: the cryptography package cannot be loaded "
            f"({e}); install it for the supervisor's Python (python3-cryptography)"
        )
        return {"error": {"kind": "other", "message": message}}


def main() -> None:
    _no_core_dumps()
    raw = sys.stdin.buffer.read(MAX_REQUEST + 1)
    try:
        request = None if len(raw) > MAX_REQUEST else json.loads(raw)
    except ValueError:
        request = None
    sys.stdout.write(json.dumps(_work(request)))


if __name__ == "__main__":
    main()
