"""Children run beside the event loop (runtime/child.py: LoopChild, run_module_on_loop),
and the token gate's readings while the fleet runs: a worker stuck on a FIFO swapped
in for kissbot.db must stop the worker, never the daemon. Real processes, a real loop."""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Iterator, Sized
from pathlib import Path

import pytest

from fixtures.kissbot_db import KissbotDb, write_key_file
from kissbot_supervisor.config.load import load_config
from kissbot_supervisor.runtime import child
from kissbot_supervisor.runtime.log import Log
from kissbot_supervisor.runtime.loop import Loop
from kissbot_supervisor.tokens.gate import TokenGate
from kissbot_supervisor.tokens.states import CredentialPending, TokenError

from .harness import TIMEOUT

SLEEPER = "import time\ntime.sleep(600)\n"
Outcome = tuple[bytes, "int | None", "str | None"]


class Ticker:
    """A timer of the loop every 10 ms: counts the turns the loop made while ``busy()``."""

    def __init__(self, loop: Loop, busy: object) -> None:
        self.loop = loop
        self.busy = busy
        self.while_busy = 0
        self._next()

    def _next(self) -> None:
        if callable(self.busy) and self.busy():
            self.while_busy += 1
        self.loop.call_later(0.01, self._next)


def run_until(loop: Loop, done: Sized, count: int = 1) -> None:
    deadline = time.monotonic() + TIMEOUT
    while len(done) < count:
        assert time.monotonic() < deadline, "nothing came"
        loop.run_once()


def noting_pids(gate: TokenGate, into: list[int]) -> object:
    """A ``busy`` for :class:`Ticker`: a token worker runs (its PID noted)."""

    def busy() -> bool:
        into.extend(gate.child_pids())
        return bool(gate.child_pids())

    return busy


def noting(into: list[str], name: str) -> Callable[[], None]:
    return lambda: into.append(name)


def gone(pid: int) -> bool:
    """Reaped: no longer our child at all (not even a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.fixture
def loop() -> Iterator[Loop]:
    loop = Loop()
    yield loop
    loop.close()


def start_worker(
    loop: Loop, done: list[Outcome], data: bytes = b"{}", timeout: float | None = None
) -> tuple[child.LoopChild, int]:
    """The token worker's module run on ``loop`` (BOOTSTRAP as the test set it); its PID."""
    run = child.run_module_on_loop(
        loop, "kissbot_supervisor.tokens.worker", data, lambda *a: done.append(a), timeout
    )
    assert run is not None
    assert run.pid is not None
    return run, run.pid


def test_an_answer_comes_with_the_exit_status(loop: Loop) -> None:
    done: list[Outcome] = []
    run, pid = start_worker(loop, done, b"not json")
    assert done == []  # never from the call itself
    run_until(loop, done)
    answer, status, problem = done[0]
    assert (answer.startswith(b'{"error"'), status, problem) == (True, 0, None)
    assert gone(pid)
    assert run.pid is None


def test_a_child_that_never_answers_is_killed_while_the_loop_runs_on(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(child, "BOOTSTRAP", SLEEPER)
    done: list[Outcome] = []
    _run, pid = start_worker(loop, done, timeout=0.5)
    ticker = Ticker(loop, lambda: not done)
    run_until(loop, done)
    answer, status, problem = done[0]
    assert (answer, status) == (b"", -9)
    assert problem == "kissbot_supervisor.tokens.worker gave no answer within 0.5 s; killed"
    assert ticker.while_busy > 0  # the loop kept turning while the child was stuck
    assert gone(pid)


def test_a_child_that_answers_without_end_is_killed_at_its_cap(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    flood = "import sys\nwhile True:\n    sys.stdout.buffer.write(b'x' * 65536)\n"
    monkeypatch.setattr(child, "BOOTSTRAP", flood)
    done: list[Outcome] = []
    start_worker(loop, done)
    run_until(loop, done)
    answer, _status, problem = done[0]
    assert answer == b""
    assert problem is not None
    assert problem.endswith(f"answered more than {child.MAX_ANSWER} bytes; killed")


def test_a_child_that_cannot_start_is_said_on_the_next_turn(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    done: list[Outcome] = []
    assert child.run_module_on_loop(loop, "x", b"", lambda *a: done.append(a)) is None
    assert done == []
    run_until(loop, done)
    assert done[0][0:2] == (b"", None)
    assert "cannot run /nonexistent/python3" in str(done[0][2])


def test_a_cancelled_child_is_killed_and_reaped_and_never_answers(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(child, "BOOTSTRAP", SLEEPER)
    done: list[Outcome] = []
    run, pid = start_worker(loop, done)
    run.cancel()
    assert gone(pid)
    turns: list[int] = []
    loop.call_later(0.2, lambda: turns.append(1))
    run_until(loop, turns)
    assert done == []


def _db_mode_checkout(workdir: Path, *, credential: bool = False) -> KissbotDb:
    (workdir / "config").mkdir()
    (workdir / "config" / "config.yaml").write_text(
        "twitch:\n  channels: [gate_chan, other_chan]\nbot:\n  name: serda_bot\n"
        f"supervisor:\n  use_db: true\n  bot:\n    credential: {str(credential).lower()}\n"
    )
    key = write_key_file(workdir)
    db = KissbotDb.create(workdir / "kissbot.db", key=key)
    db.add_account("serda_bot", "1001", "oauth-gate-secret", expires_at=time.time() + 86_400)
    return db


def test_a_stuck_token_worker_stops_itself_not_the_daemon(
    loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a bot that swaps a FIFO in for kissbot.db, between our check and
    # SQLite's open by name, does to the worker: it blocks. The gate reads on the
    # loop while the fleet runs: the loop keeps turning (exits, the control
    # socket, other timers), the worker is killed at its deadline, the problem is
    # said and read again later.
    db = _db_mode_checkout(tmp_path)
    out = io.StringIO()
    changes: list[int] = []
    gate = TokenGate(load_config(tmp_path), loop, lambda: changes.append(1), Log(out))
    try:
        assert gate.gate("gate_chan") == ("valid", None)  # read at start, waited for
        monkeypatch.setattr(child, "BOOTSTRAP", SLEEPER)
        monkeypatch.setattr(child, "TIMEOUT_SEC", 1.0)
        stuck: list[int] = []
        ticker = Ticker(loop, noting_pids(gate, stuck))
        db.add_account("other_bot", "1002", "oauth-other", expires_at=time.time() + 86_400)
        run_until(loop, changes)  # inotify, the debounce, the worker, its deadline
        assert ticker.while_busy > 0
        assert stuck
        assert "gave no answer within 1 s; killed); trying again shortly" in out.getvalue()
        assert gate.child_pids() == set()
        assert all(gone(pid) for pid in set(stuck))
        assert gate.gate("gate_chan") == ("valid", None)  # what was known is kept
        monkeypatch.undo()
        run_until(loop, changes, 2)  # the retry, with a worker that answers
        assert "token states can be read again" in out.getvalue()
    finally:
        gate.close()


def test_a_reload_cancels_a_reading_under_way(
    loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _db_mode_checkout(tmp_path)
    changes: list[int] = []
    gate = TokenGate(load_config(tmp_path), loop, lambda: changes.append(1), Log(io.StringIO()))
    try:
        monkeypatch.setattr(child, "BOOTSTRAP", SLEEPER)
        started: list[int] = []
        Ticker(loop, noting_pids(gate, started))
        db.add_account("other_bot", "1002", "oauth-other", expires_at=time.time() + 86_400)
        run_until(loop, started)
        monkeypatch.undo()
        gate.update_config(load_config(tmp_path))  # reads anew, waited for
        assert gone(started[0])
        assert gate.child_pids() == set()
        assert gate.gate("gate_chan") == ("valid", None)
    finally:
        gate.close()


def test_a_credential_file_is_written_beside_the_loop_one_worker_at_a_time(
    loop: Loop, tmp_path: Path
) -> None:
    # A start of a bot with bot.credential: the worker decrypts and writes the file
    # while the loop runs on; the start is resumed, and its next call has the file.
    _db_mode_checkout(tmp_path, credential=True)
    gate = TokenGate(load_config(tmp_path), loop, lambda: None, Log(io.StringIO()))
    resumed: list[str] = []
    seen: list[int] = []
    most = [0]

    def busy() -> bool:
        most[0] = max(most[0], len(gate.child_pids()))
        seen.extend(gate.child_pids())
        return bool(gate.child_pids())

    ticker = Ticker(loop, busy)
    try:
        for name in ("gate_chan", "other_chan"):
            with pytest.raises(CredentialPending):
                gate.credential_for(name, tmp_path / name, noting(resumed, name))
        run_until(loop, resumed, 2)
        assert resumed == ["gate_chan", "other_chan"]  # in order, one worker at a time
        assert most[0] == 1
        assert ticker.while_busy > 0
        for name in ("gate_chan", "other_chan"):
            path = gate.credential_for(name, tmp_path / name, lambda: None)
            assert path == tmp_path / name / "token"
            assert path.read_text() == "oauth-gate-secret"
        assert all(gone(pid) for pid in set(seen))
    finally:
        gate.close()


def test_a_stuck_credential_worker_fails_that_start_not_the_loop(
    loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _db_mode_checkout(tmp_path, credential=True)
    gate = TokenGate(load_config(tmp_path), loop, lambda: None, Log(io.StringIO()))
    monkeypatch.setattr(child, "BOOTSTRAP", SLEEPER)
    monkeypatch.setattr(child, "TIMEOUT_SEC", 1.0)
    resumed: list[int] = []
    ticker = Ticker(loop, lambda: bool(gate.child_pids()))
    try:
        with pytest.raises(CredentialPending):
            gate.credential_for("gate_chan", tmp_path / "gate_chan", lambda: resumed.append(1))
        run_until(loop, resumed)
        assert ticker.while_busy > 0
        with pytest.raises(TokenError, match=r"gave no answer within 1 s; killed"):
            gate.credential_for("gate_chan", tmp_path / "gate_chan", lambda: None)
        assert not (tmp_path / "gate_chan" / "token").exists()
    finally:
        gate.close()
