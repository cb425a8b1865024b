"""Security checks on a live native fleet: where tokens go, who may talk, credential files.

The tokens (YAML mode and DB mode) must reach a process only through its
credential file: never argv or environment (``/proc/PID/cmdline``,
``/proc/PID/environ`` of the supervisor, the hub and every bot), never the log
files, ``kissbotctl status --json``, the events stream or the metrics. The
control socket answers a stranger with one error line. Credential files are
0600 in a 0700 directory on tmpfs and gone once their process stops.
(The systemd backend's counterparts are in tests/systemd_sandbox/test_backend.py.)
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.fleet_tokens import BOT_SECRET, CASTER_SECRET, SECRETS, add_tokens
from kissbot_supervisor.config.paths import is_tmpfs
from linewatch import wait_until

from .conftest import StartFleet
from .harness import TIMEOUT, fleet_config

NOBODY = 65534


@pytest.fixture
def tmpfs_runtime() -> Iterator[Path]:
    """A runtime dir on tmpfs (/dev/shm), as the defaults choose; /tmp here is not."""
    top = Path(tempfile.mkdtemp(prefix="kissbot-sec-", dir="/dev/shm"))
    try:
        yield top / "run"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _fleet(workdir: Path, mode: str) -> dict[str, Any]:
    return add_tokens(fleet_config(["secure_one", "secure_two"], hub=True), workdir, mode)


def _request_lines(path: Path, request: dict[str, Any], count: int) -> list[bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while buf.count(b"\n") < count:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.split(b"\n")[:count]


def _assert_clean(where: str, data: bytes | str) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for secret in SECRETS:
        assert secret not in text, f"a token in {where}"


@pytest.mark.parametrize("mode", ["yaml", "db"])
def test_tokens_reach_processes_only_through_their_credential_files(
    start_fleet: StartFleet, tmp_path: Path, tmpfs_runtime: Path, mode: str
) -> None:
    sup = start_fleet(_fleet(tmp_path, mode), runtime_dir=tmpfs_runtime)
    sup.wait_for(r"secure_one: ready")
    sup.wait_for(r"secure_two: ready")
    status = sup.status()
    procs = {b["channel"]: b["pid"] for b in status["bots"]} | {"hub": status["hub"]["pid"]}
    assert all(procs.values()), procs

    # The events stream, while a bot restarts (and gets its token again).
    events: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sub:
        sub.settimeout(TIMEOUT)
        sub.connect(str(sup.control))
        sub.sendall(b'{"cmd":"events"}\n')
        first = sub.recv(65536)
        subscribed = json.loads(first.split(b"\n", 1)[0])
        if not subscribed.get("ok"):
            pytest.fail(f"the events command is refused: {subscribed}")
        events.append(first)
        assert sup.ctl("restart", "secure_one").returncode == 0
        buf = first
        while b'"ready"' not in buf or b"secure_one" not in buf:
            chunk = sub.recv(65536)
            assert chunk, "the events stream ended"
            buf += chunk
        events.append(buf)
    _assert_clean("the events stream", b"".join(events))
    procs["secure_one"] = sup.bot("secure_one")["pid"]

    # argv and environment of every process, the supervisor's included.
    for name, pid in {**procs, "supervisor": sup.proc.pid}.items():
        _assert_clean(f"{name}'s argv", Path(f"/proc/{pid}/cmdline").read_bytes())
        _assert_clean(f"{name}'s environment", Path(f"/proc/{pid}/environ").read_bytes())

    # Each credential file: the token, 0600 in a 0700 directory, on tmpfs.
    directories = []
    for name, pid in procs.items():
        environ = dict(
            item.split(b"=", 1)
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        if b"CREDENTIALS_DIRECTORY" not in environ:
            continue
        directory = Path(environ[b"CREDENTIALS_DIRECTORY"].decode())
        token = directory / "token"
        assert token.read_text() == (CASTER_SECRET if name == "hub" else BOT_SECRET), name
        assert stat.S_IMODE(token.stat().st_mode) == 0o600, name
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, name
        assert token.stat().st_uid == os.getuid()
        assert is_tmpfs(token), f"{token} is not on tmpfs"
        assert directory.is_relative_to(tmpfs_runtime)
        directories.append(directory)
    assert len(directories) == 3, "every process gets its token as a credential file"

    # Status, metrics, logs.
    _assert_clean("kissbotctl status --json", sup.ctl("status", "--json").stdout)
    _assert_clean("status", json.dumps(sup.status()))
    metrics = sup.request({"cmd": "metrics"})
    assert metrics["ok"] is True, metrics
    _assert_clean("metrics", json.dumps(metrics))
    logs = tmp_path / "logs" / "supervisor"
    for log in logs.iterdir():
        _assert_clean(str(log), log.read_bytes())

    # Gone once the supervisor has stopped its fleet.
    assert sup.stop() == 0
    _assert_clean("the supervisor's log", "\n".join(sup.lines))
    for directory in directories:
        assert not directory.exists(), f"{directory} outlived its process"
    leftover = tmpfs_runtime / "credentials"
    assert not leftover.exists() or not any(leftover.iterdir())


def _kissbot_group() -> int | None:
    with contextlib.suppress(KeyError):
        return grp.getgrnam("kissbot-operators").gr_gid
    return None


def test_control_socket_mode_and_a_stranger_gets_one_error_line(
    start_fleet: StartFleet,
) -> None:
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a client as another user")
    runtime = Path(tempfile.mkdtemp(prefix="kissbot-peer-", dir="/dev/shm"))
    try:
        os.chmod(runtime, 0o755)  # others may traverse it, to reach the socket itself
        sup = start_fleet(fleet_config(["guarded_one"]), runtime_dir=runtime / "run")
        sup.wait_for(r"guarded_one: ready")
        pid = sup.bot("guarded_one")["pid"]
        mode = stat.S_IMODE(sup.control.stat().st_mode)
        group = _kissbot_group()
        if group is None:
            assert mode == 0o600
        else:
            assert (mode, sup.control.stat().st_gid) == (0o660, group)
        # Open the file and its directory to anyone: the peer check must still refuse.
        os.chmod(sup.runtime_dir, 0o755)
        os.chmod(sup.control, 0o666)
        client = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX)\n"
            "s.settimeout(20)\n"
            "s.connect(sys.argv[1])\n"
            'try:\n s.sendall(b\'{"cmd":"stop","names":["all"]}\\n\')\n'
            "except OSError: pass\n"
            "b=b''\n"
            "while True:\n"
            " c=s.recv(65536)\n"
            " if not c: break\n"
            " b+=c\n"
            "sys.stdout.buffer.write(b)\n"
        )
        argv = [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            sys.executable,
            "-I",
            "-c",
            client,
            str(sup.control),
        ]
        result = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.split(b"\n")
        assert lines[-1] == b"", "the answer ends with a newline, then the server hangs up"
        assert len(lines) == 2, result.stdout
        answer = json.loads(lines[0])
        assert answer == {
            "ok": False,
            "error": "permission denied: you need to be root, the supervisor's user, "
            "or in group kissbot-operators",
        }
        assert sup.seen(rf"control: refused a client \(PID \d+, UID {NOBODY}, GID {NOBODY}\): ")
        # Its stop request did nothing.
        assert sup.bot("guarded_one")["pid"] == pid
        wait_until(lambda: sup.bot("guarded_one")["state"] == "running")
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def test_default_runtime_dir_is_on_tmpfs() -> None:
    """Where credential files go when nothing is configured, on this machine."""
    from kissbot_supervisor.config.paths import default_runtime_dir

    path = Path(default_runtime_dir(dict(os.environ)))
    probe = path
    while not probe.exists():
        probe = probe.parent
    assert is_tmpfs(probe), f"{path} would not be on tmpfs"
