"""The token worker's logic (tokens/worker.py), run in-process on real KissBot DBs:
its answers, the errors it carries across the pipe, the key check the daemon
makes without cryptography. The worker as a child is tested in
tests/process/test_token_worker.py."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st

from fixtures.kissbot_db import KissbotDb, new_key, write_key_file
from kissbot_supervisor.tokens.states import (
    CredentialFileError,
    KeyFileError,
    KeyFileMissing,
    TokenDbBusy,
    TokenDbError,
    TokenDbNotFound,
    TokenDbSchemaError,
    TokenError,
    TokenReport,
    TokenState,
    UndecryptableToken,
    is_fernet_key,
)
from kissbot_supervisor.tokens.worker import (
    answer_of_error,
    answer_of_report,
    error_from_answer,
    work,
)

SECRET = "SECRET-worker-token-5e1d"


def fernet_takes(key: bytes) -> bool:
    try:
        Fernet(key)
    except (ValueError, TypeError):
        return False
    return True


@given(st.binary(max_size=64))
def test_the_key_check_never_refuses_a_key_fernet_takes(key: bytes) -> None:
    if fernet_takes(key):
        assert is_fernet_key(key)


@given(st.binary(min_size=32, max_size=32), st.sampled_from([b"", b"\n", b"\r\n", b" ", b"="]))
def test_the_key_check_takes_real_keys_and_refuses_cut_or_padded_ones(
    raw: bytes, tail: bytes
) -> None:
    key = base64.urlsafe_b64encode(raw)  # as KissBot writes it (Fernet.generate_key)
    assert is_fernet_key(key + tail)
    assert is_fernet_key(key.rstrip(b"=") + tail)  # without padding: Fernet 51 takes it
    for variant in (key, key.rstrip(b"="), key[:-3], key[:-3] + b"AAAA"):
        if fernet_takes(variant + tail):
            assert is_fernet_key(variant + tail)
    assert not is_fernet_key(key[:-4] + tail)  # 24 bytes
    assert not is_fernet_key(key + b"AAAA" + tail)  # 35 bytes


ERRORS: list[TokenError] = [
    UndecryptableToken("wrong key or damaged value", "the bot token"),
    KeyFileMissing(Path("/w/.kissbot.key")),
    KeyFileError(Path("/w/.kissbot.key"), "is not a Fernet key"),
    CredentialFileError(Path("/run/x/credentials/a"), "cannot be written (No space left)"),
    TokenDbBusy(Path("/w/kissbot.db"), 5, 3.1),
    TokenDbNotFound(Path("/w/kissbot.db")),
    TokenDbSchemaError(Path("/w/kissbot.db"), ("table users",)),
    TokenError("something else"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_cross_the_pipe_with_their_words_and_kind(error: TokenError) -> None:
    again = error_from_answer(json.loads(json.dumps(answer_of_error(error))))
    assert str(again) == str(error)
    # The daemon tells these apart: a wrong key blocks, a busy DB is retried.
    for kind in (UndecryptableToken, KeyFileError, TokenDbBusy, TokenDbError):
        assert isinstance(again, kind) == isinstance(error, kind)


@pytest.mark.parametrize(
    "answer",
    [None, "text", {}, {"kind": "undecryptable"}, {"kind": "db-busy", "path": "/x"}, {"kind": 3}],
)
def test_an_answer_the_worker_cannot_have_meant_is_an_error_about_the_worker(
    answer: object,
) -> None:
    error = error_from_answer(answer)
    assert type(error) is TokenError
    assert "token worker" in str(error)


def test_a_report_crosses_the_pipe_unchanged() -> None:
    from kissbot_supervisor.tokens.worker import _report

    report = TokenReport(TokenState.EXPIRING, "expires soon", 1.5e9, "serda_bot", "1001")
    assert _report(json.loads(json.dumps(answer_of_report(report)))) == report


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"[]", b'{"op": "shell"}', b'{"op": "states"}', b"{" * 70_000]
)
def test_a_bad_request_is_an_answer_not_a_crash(raw: bytes) -> None:
    answer = work(raw)
    assert answer["error"]["kind"] == "other"
    assert "bad request" in answer["error"]["message"]


def states_request(workdir: Path, verified: dict[str, str | None]) -> bytes:
    request: dict[str, Any] = {
        "op": "states",
        "db": str(workdir / "kissbot.db"),
        "bot_login": "serda_bot",
        "hub_login": "el_serda",
        "now": time.time(),
        "quick": True,
        "workdir": str(workdir),
        "verified": verified,
    }
    return json.dumps(request).encode()


@pytest.fixture
def fleet_db(tmp_path: Path) -> KissbotDb:
    db = KissbotDb.create(tmp_path / "kissbot.db", key=write_key_file(tmp_path))
    db.add_account("serda_bot", "1001", SECRET, expires_at=time.time() + 86_400)
    return db


def test_states_say_whether_each_asked_token_decrypts(tmp_path: Path, fleet_db: KissbotDb) -> None:
    answer = work(states_request(tmp_path, {"bot": None, "broadcaster": None}))
    assert answer["bot"]["state"] == "valid"
    assert answer["broadcaster"]["state"] == "missing"
    # Only a usable token is decrypted: the broadcaster has none.
    assert set(answer["decrypts"]) == {"bot"}
    assert answer["decrypts"]["bot"]["error"] is None
    assert SECRET not in json.dumps(answer)

    write_key_file(tmp_path, new_key())  # another key: the token no longer decrypts
    wrong = work(states_request(tmp_path, {"bot": None}))
    error = error_from_answer(wrong["decrypts"]["bot"]["error"])
    assert isinstance(error, UndecryptableToken)
    assert wrong["decrypts"]["bot"]["fingerprint"] == answer["decrypts"]["bot"]["fingerprint"]


def test_a_token_found_to_decrypt_before_is_not_decrypted_again(
    tmp_path: Path, fleet_db: KissbotDb
) -> None:
    first = work(states_request(tmp_path, {"bot": None}))["decrypts"]["bot"]
    (tmp_path / ".kissbot.key").unlink()  # any decryption would fail now
    known = work(states_request(tmp_path, {"bot": first["fingerprint"]}))["decrypts"]["bot"]
    assert known == first
    fresh = work(states_request(tmp_path, {"bot": None}))["decrypts"]["bot"]
    assert isinstance(error_from_answer(fresh["error"]), KeyFileMissing)


def test_the_credential_is_written_by_the_worker_and_only_there(
    tmp_path: Path, fleet_db: KissbotDb
) -> None:
    directory = tmp_path / "run" / "credentials" / "a_bot"
    request = {
        "op": "credential",
        "db": str(fleet_db.path),
        "workdir": str(tmp_path),
        "login": "serda_bot",
        "role": "bot",
        "directory": str(directory),
    }
    answer = work(json.dumps(request).encode())
    assert answer == {"path": str(directory / "token")}
    assert (directory / "token").read_text() == SECRET
    assert os.stat(directory / "token").st_mode & 0o777 == 0o600
    nobody = work(json.dumps({**request, "login": "nobody"}).encode())
    assert nobody == {"path": None}
    caster = work(json.dumps({**request, "role": "root"}).encode())
    assert "knows no role" in caster["error"]["message"]
