"""The installed ``kissbotctl`` as a real subprocess against real Unix sockets.

A small server thread answers canned protocol lines, so these tests check the
client's side of the protocol, its exit codes and its one-line errors without
a running supervisor.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kissbot_supervisor.cli.client import Client, ControlError

KISSBOTCTL = shutil.which("kissbotctl", path=str(Path(sys.executable).parent))
NOBODY = 65534
# Every kissbotctl run must end well within this; a hang fails the test.
RUN_TIMEOUT = 20.0

CLOSE = b"<close without answering>"
HANG = b"<never answer>"


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KISSBOT_CONTROL_SOCKET", "RUNTIME_DIRECTORY", "COLUMNS", "FORCE_COLOR"}
    }
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def run_ctl(
    *args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    assert KISSBOTCTL is not None, "kissbotctl is not installed next to the test interpreter"
    return subprocess.run(
        [*prefix, KISSBOTCTL, *args],
        env=env if env is not None else _env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
        cwd="/",
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed run (asserting there is exactly one)."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kissbotctl: "), lines[0]
    return lines[0]


# --- a canned control server -------------------------------------------------


class CannedServer:
    """A Unix-socket server that answers each request with a canned line.

    ``answers`` maps a command to the bytes of its response line, or to
    :data:`CLOSE` (hang up without answering) or :data:`HANG` (keep the
    connection open and never answer). Requests received are recorded.
    """

    def __init__(self, path: Path, answers: dict[str, bytes]) -> None:
        self.path = path
        self.answers = answers
        self.requests: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(8)
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                self.requests.append(request)
                cmd = request.get("cmd")
                # "CMD+progress": the answer to a request that asks for progress lines.
                answer = self.answers.get(f"{cmd}+progress" if request.get("progress") else "")
                answer = answer or self.answers.get(cmd, CLOSE)
                if answer == CLOSE:
                    return
                if answer == HANG:
                    self._stop.wait()
                    return
                conn.sendall(answer)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Short and world-traversable: AF_UNIX paths are limited to 107 bytes, and
    # the permission test runs kissbotctl as another user.
    path = Path(tempfile.mkdtemp(prefix="kbctl-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def serve(sock_dir: Path) -> Iterator[Callable[[dict[str, bytes]], CannedServer]]:
    servers: list[CannedServer] = []

    def start(answers: dict[str, bytes]) -> CannedServer:
        server = CannedServer(sock_dir / f"control{len(servers)}.sock", answers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _proc(name: str, state: str, want: bool = True, **extra: Any) -> dict[str, Any]:
    running = state == "running"
    proc: dict[str, Any] = {
        "name": name,
        "channel": name,
        "state": state,
        "want": want,
        "pid": 4000 + len(name) if running else None,
        "uptime_s": 3725.5 if running else None,
        "restarts": 0,
        "rss_bytes": 50541363 if running else None,
        "last_exit": None if running else "exit 1",
        "token_state": "valid",
        "reason": None,
        "status_text": None,
    }
    proc.update(extra)
    return proc


def _status(*bots: dict[str, Any], hub_state: str = "running") -> dict[str, Any]:
    hub = _proc("hub", hub_state, socket="/tmp/kissbot_hub.sock")
    del hub["channel"]
    return {
        "backend": "native",
        "supervisor": {
            "pid": 4242,
            "uptime_s": 184447.0,
            "version": "0.1.0",
            "config": "config/config.yaml",
            "workdir": "/srv/kissbot",
            "control_socket": "/run/kissbot-supervisor/control.sock",
            "rss_bytes": None,
        },
        "hub": hub,
        "bots": list(bots),
    }


ALL_RUNNING = _status(_proc("el_serda", "running"), _proc("morthy", "running"))
ONE_DOWN = _status(
    _proc("el_serda", "running"),
    _proc("morthy", "failed", reason="token revoked: re-authorise the bot"),
    _proc("quiet_one", "stopped", want=False),
)


# --- the supervisor cannot be reached ------------------------------------------


def test_entry_point_is_installed() -> None:
    assert KISSBOTCTL is not None
    proc = run_ctl("--help")
    assert proc.returncode == 0
    for command in ("status", "start", "stop", "restart", "reload"):
        assert command in proc.stdout
        sub = run_ctl(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert f"usage: kissbotctl {command}" in sub.stdout


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["stop", "el_serda"]])
def test_no_socket(sock_dir: Path, command: list[str]) -> None:
    missing = sock_dir / "nothing-here.sock"
    proc = run_ctl("--socket", str(missing), *command)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert one_error_line(proc) == (
        f"kissbotctl: no supervisor at {missing} (No such file or directory); "
        "is kissbot-supervisor running?"
    )


def test_socket_from_the_environment_and_after_the_subcommand(sock_dir: Path) -> None:
    from_env = sock_dir / "from-env.sock"
    proc = run_ctl("status", env=_env(KISSBOT_CONTROL_SOCKET=str(from_env)))
    assert proc.returncode == 1
    assert f"no supervisor at {from_env} " in one_error_line(proc)
    flag = sock_dir / "flag.sock"
    proc = run_ctl("status", "--socket", str(flag), env=_env(KISSBOT_CONTROL_SOCKET=str(from_env)))
    assert f"no supervisor at {flag} " in one_error_line(proc)


def test_stale_socket_file(sock_dir: Path) -> None:
    stale = sock_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))  # bound, never listening: the file of a dead supervisor
    proc = run_ctl("--socket", str(stale), "status")
    assert proc.returncode == 1
    assert one_error_line(proc) == (
        f"kissbotctl: no supervisor at {stale} (Connection refused); is kissbot-supervisor running?"
    )


def _unprivileged_prefix() -> tuple[tuple[str, ...], int]:
    """How to run kissbotctl without access to a socket we own, and the mode to give it.

    Root passes every permission check, so as root kissbotctl runs as nobody
    (setpriv) against a 0600 socket; anyone else is refused a socket of mode
    0000 even when they own it.
    """
    if os.geteuid() != 0:
        return (), 0o000
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop privileges")
    prefix = (setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    probe = run_ctl("--version", prefix=prefix)
    if probe.returncode != 0:
        pytest.skip(f"user {NOBODY} cannot run {KISSBOTCTL}: {probe.stderr.strip()}")
    return prefix, 0o600


@pytest.mark.parametrize("denied", [True, False], ids=["mode-denies", "control-mode-allows"])
def test_permission_denied(serve: Callable[[dict[str, bytes]], CannedServer], denied: bool) -> None:
    prefix, mode = _unprivileged_prefix()
    server = serve({"status": _line({"ok": True, "status": ALL_RUNNING})})
    server.path.chmod(mode if denied else 0o666)
    proc = run_ctl("--socket", str(server.path), "status", prefix=prefix)
    if denied:
        assert proc.returncode == 1
        assert one_error_line(proc) == (
            f"kissbotctl: permission denied on {server.path} "
            "(you need to be root, the supervisor's user, or in its operators' group "
            "(control_group, kissbot-operators by default))"
        )
        assert server.requests == []
    else:  # the same user and socket with an open mode get through: the mode was the cause
        assert proc.returncode == 0, proc.stderr
        assert server.requests == [{"cmd": "status"}]


# --- status ----------------------------------------------------------------------


def test_status_json_passthrough(serve: Callable[[dict[str, bytes]], CannedServer]) -> None:
    server = serve({"status": _line({"ok": True, "status": ALL_RUNNING})})
    proc = run_ctl("--socket", str(server.path), "status", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert json.loads(proc.stdout) == ALL_RUNNING
    assert server.requests == [{"cmd": "status"}]


def test_status_exit_3_when_a_wanted_bot_is_not_running(
    serve: Callable[[dict[str, bytes]], CannedServer],
) -> None:
    server = serve({"status": _line({"ok": True, "status": ONE_DOWN})})
    proc = run_ctl("--socket", str(server.path), "status")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == ""
    assert "KissBot supervisor" in proc.stdout
    assert "1/3 bots running" in proc.stdout
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines() if line}
    assert rows["el_serda"] == "running"
    assert rows["morthy"] == "failed"
    assert "↳ token revoked: re-authorise the bot" in proc.stdout
    assert "\x1b" not in proc.stdout  # not a terminal, and NO_COLOR
    assert all(len(line) <= 80 for line in proc.stdout.splitlines())


def test_status_exit_0_when_every_wanted_process_runs(
    serve: Callable[[dict[str, bytes]], CannedServer],
) -> None:
    stopped_on_purpose = _status(
        _proc("el_serda", "running"), _proc("quiet_one", "stopped", want=False)
    )
    server = serve({"status": _line({"ok": True, "status": stopped_on_purpose})})
    proc = run_ctl("--socket", str(server.path), "status")
    assert proc.returncode == 0, proc.stderr
    assert "1/2 bots running" in proc.stdout


def test_status_exit_3_when_the_hub_is_down(
    serve: Callable[[dict[str, bytes]], CannedServer],
) -> None:
    hub_down = _status(_proc("el_serda", "running"), hub_state="backoff")
    server = serve({"status": _line({"ok": True, "status": hub_down})})
    assert run_ctl("--socket", str(server.path), "status").returncode == 3


def test_status_filter_decides_the_exit_code(
    serve: Callable[[dict[str, bytes]], CannedServer],
) -> None:
    server = serve({"status": _line({"ok": True, "status": ONE_DOWN})})
    path = str(server.path)

    healthy = run_ctl("--socket", path, "status", "el_serda", "--json")
    assert healthy.returncode == 0, healthy.stderr
    shown = json.loads(healthy.stdout)
    assert [b["channel"] for b in shown["bots"]] == ["el_serda"]
    assert "hub" not in shown
    assert shown["supervisor"] == ONE_DOWN["supervisor"]

    assert run_ctl("--socket", path, "status", "morthy").returncode == 3
    assert run_ctl("--socket", path, "status", "hub", "el_serda").returncode == 0
    assert run_ctl("--socket", path, "status", "all").returncode == 3

    unknown = run_ctl("--socket", path, "status", "el_serda", "nobody_here")
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert one_error_line(unknown) == (
        "kissbotctl: unknown channel 'nobody_here' (known: el_serda, morthy, quiet_one)"
    )


# --- error answers and broken supervisors ------------------------------------------


def test_error_response_exits_1(serve: Callable[[dict[str, bytes]], CannedServer]) -> None:
    error = "unknown channel 'nobody' (known: el_serda, morthy)"
    server = serve(
        {
            "start": _line({"ok": False, "error": error}),
            "reload": _line(
                {
                    "ok": False,
                    "error": "config/config.yaml: twitch.channels[2]:\n'a b' is not a Twitch login",
                }
            ),
        }
    )
    proc = run_ctl("--socket", str(server.path), "start", "nobody")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert one_error_line(proc) == f"kissbotctl: {error}"
    assert server.requests == [{"cmd": "start", "names": ["nobody"], "progress": True}]

    proc = run_ctl("--socket", str(server.path), "reload")
    assert proc.returncode == 1
    assert one_error_line(proc) == (
        "kissbotctl: config/config.yaml: twitch.channels[2]: 'a b' is not a Twitch login"
    )


def test_client_reads_a_refusal_sent_before_hanging_up(sock_dir: Path) -> None:
    # The daemon refuses a peer it does not allow (SO_PEERCRED) with one error
    # line and closes at once; if that happens before the request is sent, the
    # send fails with EPIPE, and the refusal must still reach the user.
    path = sock_dir / "refusing.sock"
    refusal = {"ok": False, "error": "permission denied: you need to be root"}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        with Client(path, timeout=5) as client:
            conn, _ = listener.accept()
            conn.sendall(_line(refusal))
            conn.close()
            assert client.request({"cmd": "status"}) == refusal
            with pytest.raises(ControlError, match="closed the connection without an answer"):
                client.request({"cmd": "status"})


def test_closed_without_answer(serve: Callable[[dict[str, bytes]], CannedServer]) -> None:
    server = serve({"status": CLOSE})
    proc = run_ctl("--socket", str(server.path), "status")
    assert proc.returncode == 1
    assert (
        one_error_line(proc) == "kissbotctl: the supervisor closed the connection without an answer"
    )


def test_timeout_when_no_answer_comes(serve: Callable[[dict[str, bytes]], CannedServer]) -> None:
    server = serve({"status": HANG})
    proc = run_ctl("--socket", str(server.path), "--timeout", "0.3", "status")
    assert proc.returncode == 1
    assert one_error_line(proc) == (
        f"kissbotctl: no answer from the supervisor at {server.path} within 0.3 s"
    )


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"this is not json\n", "the supervisor's answer is not valid JSON"),
        (b'["ok"]\n', "the supervisor's answer is a list, not a JSON object"),
        (b'{"ok": true}\n', "the supervisor's answer has no status object"),
    ],
)
def test_garbled_answer(
    serve: Callable[[dict[str, bytes]], CannedServer], answer: bytes, message: str
) -> None:
    server = serve({"status": answer})
    proc = run_ctl("--socket", str(server.path), "status")
    assert proc.returncode == 1
    assert one_error_line(proc).startswith(f"kissbotctl: {message}")


# --- start / stop / restart / reload ------------------------------------------------


def _results(*results: dict[str, Any]) -> bytes:
    return _line({"ok": True, "results": list(results), "status": ALL_RUNNING})


def test_start_prints_one_line_per_result(
    serve: Callable[[dict[str, bytes]], CannedServer],
) -> None:
    server = serve(
        {
            "start": _results(
                {
                    "name": "el_serda",
                    "result": "started",
                    "pid": 1234,
                    "state": "running",
                    "message": "",
                },
                {
                    "name": "hub",
                    "result": "already running",
                    "pid": 99,
                    "state": "running",
                    "message": "nothing to do",
                },
            )
        }
    )
    proc = run_ctl("--socket", str(server.path), "start", "el_serda", "hub")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "el_serda: started (PID 1234)",
        "hub: already running (PID 99): nothing to do",
    ]
    assert server.requests == [{"cmd": "start", "names": ["el_serda", "hub"], "progress": True}]


def test_a_supervisor_that_breaks_its_word_on_the_wait_is_one_line_and_exit_1(
    serve: Callable[[dict[str, bytes]], CannedServer],
) -> None:
    # It says it answers within 0.4 s (one of two settled), then never does: given up
    # 0.4 + 1 s later, with the outcome it did say.
    progress = {"progress": {"wait_sec": 0.5, "waiting": ["el_serda", "morthy"], "done": []}}
    settled = {
        "progress": {
            "wait_sec": 0.4,
            "waiting": ["morthy"],
            "done": [{"name": "el_serda", "ok": True, "result": "started", "pid": 7}],
        }
    }
    server = serve({"start": _line(progress) + _line(settled)})
    proc = run_ctl("--socket", str(server.path), "--timeout", "1", "start", "el_serda", "morthy")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "it said it would answer within 0.4 s, and 1 s more have passed" in line
    assert line.endswith("; no outcome for: morthy")
    assert proc.stdout == "el_serda: started (PID 7)\n"  # what was said is not lost


def test_a_supervisor_that_knows_no_progress_is_asked_again_without(
    serve: Callable[[dict[str, bytes]], CannedServer],
) -> None:
    # What an older supervisor (mid-upgrade) says to the key it does not know.
    refusal = {"ok": False, "error": "unknown key 'progress' in the request (allowed: cmd, names)"}
    result = {"name": "el_serda", "result": "started", "pid": 3, "state": "running"}
    server = serve({"start+progress": _line(refusal), "start": _results(result)})
    proc = run_ctl("--socket", str(server.path), "start", "el_serda")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "el_serda: started (PID 3)\n"
    assert server.requests == [
        {"cmd": "start", "names": ["el_serda"], "progress": True},
        {"cmd": "start", "names": ["el_serda"]},
    ]


@pytest.mark.parametrize(
    "refusal",
    [
        "unknown key 'rolling' in the request (allowed: cmd, names, progress)",
        "unknown key 'progress' in the request (allowed: cmd, names)",
    ],
)
def test_a_supervisor_that_knows_no_rolling_restart_is_said_so_and_nothing_restarts(
    serve: Callable[[dict[str, bytes]], CannedServer], refusal: str
) -> None:
    server = serve({"restart": _line({"ok": False, "error": refusal})})
    proc = run_ctl("--socket", str(server.path), "restart", "all", "--rolling", "5")
    assert proc.returncode == 1
    assert one_error_line(proc) == (
        "kissbotctl: the supervisor runs an older version that cannot do a rolling restart, "
        "so nothing was restarted; restart the supervisor itself to run the new version, "
        "or leave out --rolling"
    )
    # Not asked again without it: a plain restart of every bot at once is not what was asked.
    assert server.requests == [{"cmd": "restart", "names": ["all"], "progress": True, "rolling": 5}]


@pytest.mark.parametrize("command", ["stop", "restart"])
def test_a_failed_result_exits_1(
    serve: Callable[[dict[str, bytes]], CannedServer], command: str
) -> None:
    server = serve(
        {
            command: _results(
                {
                    "name": "el_serda",
                    "result": "stopped",
                    "pid": None,
                    "state": "stopped",
                    "message": "",
                },
                {
                    "name": "morthy",
                    "result": "failed",
                    "pid": None,
                    "state": "failed",
                    "message": "token revoked",
                },
            )
        }
    )
    proc = run_ctl("--socket", str(server.path), command, "all")
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == ["el_serda: stopped", "morthy: failed: token revoked"]
    assert server.requests == [{"cmd": command, "names": ["all"], "progress": True}]


def test_reload_prints_the_changes(serve: Callable[[dict[str, bytes]], CannedServer]) -> None:
    changes = {"added": ["a_bot", "b_bot"], "removed": ["c_bot"], "changed": []}
    server = serve({"reload": _line({"ok": True, "changes": changes})})
    proc = run_ctl("--socket", str(server.path), "reload")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "reloaded: added a_bot, b_bot; removed c_bot; changed none\n"
    assert server.requests == [{"cmd": "reload"}]


@pytest.mark.parametrize(
    "args",
    [["start"], ["frobnicate"], ["--timeout", "0", "status"], ["--timeout", "soon", "status"]],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    proc = run_ctl("--socket", "/nonexistent/control.sock", *args)
    assert proc.returncode == 2
    assert "usage: kissbotctl" in proc.stderr
