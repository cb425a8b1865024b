"""The demo bot and hub as real processes: sd_notify datagrams, pipes, files, the hub socket.

Synchronisation is always on a real signal (a datagram, an output line, a
reply, process exit); every timeout is only a safety limit so a broken demo
fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

DEMO = (sys.executable, "-m", "kissbot_supervisor.demo")
SAFETY = 10.0  # seconds; never reached when the demo works
INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY")
BOT_FILES = ("pid", "starting", "irc", "eventsub", "ready")


def demo_env(**extra: str) -> dict[str, str]:
    """This environment without any supervisor variables the test run itself may have."""
    env = {k: v for k, v in os.environ.items() if k not in INHERITED}
    env.update(extra)
    return env


# -- a demo process with both output pipes read -----------------------------


class DemoProcess:
    """A running demo program; output is read only when a test waits for it."""

    def __init__(self, args: tuple[str, ...], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*DEMO, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.pipes = {"stdout": self.proc.stdout, "stderr": self.proc.stderr}
        self.pending = {"stdout": bytearray(), "stderr": bytearray()}
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.selector = selectors.DefaultSelector()
        for name, pipe in self.pipes.items():
            self.selector.register(pipe, selectors.EVENT_READ, name)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self, deadline: float) -> bool:
        """Read whatever output is available before ``deadline``; False once both pipes hit EOF."""
        if not self.selector.get_map():
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self._read_ready(remaining)
        return True

    def read_available(self) -> None:
        """Take in whatever output is already there, without waiting."""
        if self.selector.get_map():
            self._read_ready(0)

    def _read_ready(self, timeout: float) -> None:
        for key, _events in self.selector.select(timeout):
            name: str = key.data
            data = os.read(self.pipes[name].fileno(), 65536)
            if not data:
                self.selector.unregister(key.fileobj)
                if self.pending[name]:
                    self.lines[name].append(self.pending[name].decode(errors="replace"))
                    self.pending[name].clear()
                continue
            self.pending[name] += data
            *complete, rest = self.pending[name].split(b"\n")
            self.lines[name].extend(line.decode(errors="replace") for line in complete)
            self.pending[name] = bytearray(rest)

    def wait_for_line(self, stream: str, text: str, *, after: int = 0) -> int:
        """Index of the first ``stream`` line at or after ``after`` that contains ``text``."""
        deadline = time.monotonic() + SAFETY
        start = after
        while True:
            lines = self.lines[stream]
            for index in range(start, len(lines)):
                if text in lines[index]:
                    return index
            start = len(lines)
            try:
                if not self._pump(deadline):
                    raise AssertionError(f"{stream} closed before {text!r}: {self.lines}")
            except TimeoutError:
                raise AssertionError(
                    f"no {text!r} on {stream} in {SAFETY} s: {self.lines}"
                ) from None

    def read_stdout_bytes(self, count: int) -> int:
        """Read until at least ``count`` bytes of stdout have arrived; return how many did."""
        deadline = time.monotonic() + SAFETY
        total = 0
        stdout = self.pipes["stdout"].fileno()
        while total < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {total} bytes of stdout in {SAFETY} s")
            total += len(os.read(stdout, 1 << 20))
        return total

    def wait(self) -> int:
        """Exit status (negative: killed by that signal), after reading all output."""
        deadline = time.monotonic() + SAFETY
        try:
            while self._pump(deadline):
                pass
        except TimeoutError:
            raise AssertionError(f"still running after {SAFETY} s: {self.lines}") from None
        return self.proc.wait(timeout=SAFETY)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=SAFETY)
        self.selector.close()
        for pipe in self.pipes.values():
            pipe.close()


Spawn = Callable[..., DemoProcess]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start demo programs; all are killed and reaped at teardown."""
    started: list[DemoProcess] = []

    def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> DemoProcess:
        process = DemoProcess(args, cwd, demo_env() if env is None else env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


# -- an sd_notify socket -----------------------------------------------------


class NotifyListener:
    """A bound abstract datagram socket, like the one a supervisor hands its children."""

    def __init__(self) -> None:
        name = f"kissbot-test-{uuid.uuid4().hex}"
        self.address = "@" + name  # abstract: no path-length limit, nothing to clean up
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + name)
        self.seen: list[str] = []

    def wait_for(self, message: str, sender: DemoProcess) -> list[str]:
        """Receive until ``message`` arrives; return everything received so far.

        Fails at once, with the sender's output, if the sender exits first.
        """
        deadline = time.monotonic() + SAFETY
        # Short receive timeouts only to notice a dead sender quickly.
        self.sock.settimeout(0.2)
        while message not in self.seen:
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except TimeoutError:
                if sender.proc.poll() is not None:
                    sender.wait()
                    raise AssertionError(
                        f"exited {sender.proc.returncode} before {message!r}: {sender.lines}"
                    ) from None
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"no {message!r} in {SAFETY} s; got {self.seen}; {sender.lines}"
                    ) from None
        return self.seen

    def receive_within(self, seconds: float) -> str | None:
        """The next datagram, or None if none arrives within ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            message = self.sock.recv(4096).decode()
        except TimeoutError:
            return None
        self.seen.append(message)
        return message

    def drain(self) -> list[str]:
        """Everything already queued, without waiting."""
        self.sock.setblocking(False)
        try:
            while True:
                self.seen.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return self.seen


@pytest.fixture
def notify_socket() -> Iterator[Callable[[], NotifyListener]]:
    made: list[NotifyListener] = []

    def make() -> NotifyListener:
        made.append(NotifyListener())
        return made[-1]

    yield make
    for listener in made:
        listener.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory for hub sockets: pytest's tmp_path can exceed the 107-byte AF_UNIX limit."""
    path = Path(tempfile.mkdtemp(prefix="kbd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- a hub client -------------------------------------------------------------


class HubClient:
    """One connection to the hub, speaking JSON lines."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(SAFETY)
        self.buffer = b""
        try:
            self.sock.connect(str(path))
        except OSError:
            self.sock.close()
            raise

    def send(self, message: dict[str, object] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.sock.sendall(data)

    def receive(self) -> dict[str, object]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "hub closed the connection"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        reply: dict[str, object] = json.loads(line)
        return reply

    def ask(self, message: dict[str, object] | bytes) -> dict[str, object]:
        self.send(message)
        return self.receive()

    def close(self) -> None:
        self.sock.close()


def start_hub(
    spawn: Spawn, cwd: Path, sock: Path, listener: NotifyListener, *extra: str
) -> DemoProcess:
    """A demo hub started with the upstream argv; returns once it reports READY=1."""
    hub = spawn(
        "hub",
        "--config",
        "config/config.yaml",
        "--db",
        "kissbot.db",
        "--socket",
        str(sock),
        *extra,
        cwd=cwd,
        env=demo_env(NOTIFY_SOCKET=listener.address),
    )
    listener.wait_for("READY=1", hub)
    return hub


# -- the bot ---------------------------------------------------------------------


def test_bot_reports_ready_and_writes_its_pid_files(
    tmp_path: Path, spawn: Spawn, notify_socket: Callable[[], NotifyListener]
) -> None:
    listener = notify_socket()
    bot = spawn(
        "bot",
        "--channel=alpha",
        "--config=config/config.yaml",
        "--eventsub=direct",
        cwd=tmp_path,
        env=demo_env(NOTIFY_SOCKET=listener.address),
    )
    listener.wait_for("READY=1", bot)
    # The ready file is written before READY=1 is sent.
    pids = tmp_path / "pids"
    assert {p.name for p in pids.iterdir()} == {f"alpha.{suffix}" for suffix in BOT_FILES}
    assert (pids / "alpha.pid").read_text().strip() == str(bot.pid)
    listener.wait_for("STATUS=joined #alpha", bot)
    bot.wait_for_line("stdout", "joined #alpha")


def test_bot_without_ready_file_still_notifies(
    tmp_path: Path, spawn: Spawn, notify_socket: Callable[[], NotifyListener]
) -> None:
    listener = notify_socket()
    bot = spawn(
        "bot",
        "--channel",
        "quiet",
        "--no-ready-file",
        "--ready-delay",
        "0.1",
        cwd=tmp_path,
        env=demo_env(NOTIFY_SOCKET=listener.address),
    )
    listener.wait_for("READY=1", bot)
    assert (tmp_path / "pids" / "quiet.starting").exists()
    assert not (tmp_path / "pids" / "quiet.ready").exists()


def test_bot_with_exit_code_exits_before_ready(
    tmp_path: Path, spawn: Spawn, notify_socket: Callable[[], NotifyListener]
) -> None:
    listener = notify_socket()
    bot = spawn(
        "bot",
        "--channel",
        "revoked",
        "--exit-code",
        "1",
        cwd=tmp_path,
        env=demo_env(NOTIFY_SOCKET=listener.address),
    )
    assert bot.wait() == 1
    # Every datagram it sent is queued by now: READY=1 was never among them.
    assert "READY=1" not in listener.drain()
    assert not (tmp_path / "pids" / "revoked.ready").exists()
    assert (tmp_path / "pids" / "revoked.pid").exists()


def test_bot_exits_1_as_the_real_one_when_twitch_cannot_be_reached(
    tmp_path: Path, spawn: Spawn, notify_socket: Callable[[], NotifyListener]
) -> None:
    listener = notify_socket()
    with socket.create_server(("127.0.0.1", 0)) as twitch:
        port = twitch.getsockname()[1]
        # Reachable: it connects, then goes on to ready.
        bot = spawn(
            "bot", "--channel", "online", "--twitch", f"127.0.0.1:{port}",
            cwd=tmp_path, env=demo_env(NOTIFY_SOCKET=listener.address),
        )  # fmt: skip
        listener.wait_for("READY=1", bot)
        conn, _ = twitch.accept()  # it did connect
        conn.close()
    # Nobody listens on that port now: refused, as during an outage.
    bot = spawn("bot", "--channel", "offline", "--twitch", f"127.0.0.1:{port}", cwd=tmp_path)
    assert bot.wait() == 1
    bot.read_available()
    assert bot.lines["stderr"][-1] == (
        "aiohttp.client_exceptions.ClientConnectorError: Cannot connect to host "
        f"irc.chat.twitch.tv:6697 ssl:default [Connect call failed ('127.0.0.1', {port})]"
    )
    assert not (tmp_path / "pids" / "offline.ready").exists()


def test_bot_crashes_with_its_exit_code_after_ready(
    tmp_path: Path, spawn: Spawn, notify_socket: Callable[[], NotifyListener]
) -> None:
    listener = notify_socket()
    bot = spawn(
        "bot",
        "--channel",
        "crashy",
        "--crash-after",
        "0.05",
        "--exit-code",
        "7",
        cwd=tmp_path,
        env=demo_env(NOTIFY_SOCKET=listener.address),
    )
    listener.wait_for("READY=1", bot)
    assert bot.wait() == 7


def test_bot_pings_the_watchdog_until_it_hangs(
    tmp_path: Path, spawn: Spawn, notify_socket: Callable[[], NotifyListener]
) -> None:
    listener = notify_socket()
    bot = spawn(
        "bot",
        "--channel",
        "hangs",
        "--hang-after",
        "0.4",
        "--chat-interval",
        "0.05",
        cwd=tmp_path,
        env=demo_env(NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="100000"),
    )
    listener.wait_for("READY=1", bot)
    bot.wait_for_line("stderr", "hanging now")
    # Pings every 0.05 s for 0.4 s; "several" leaves room for a slow machine.
    assert listener.drain().count("WATCHDOG=1") >= 3
    bot.read_available()
    chat_lines = len(bot.lines["stdout"])
    # Ten watchdog intervals of silence: nothing pings or prints once the loop is stuck.
    assert listener.receive_within(0.5) is None
    bot.read_available()
    assert len(bot.lines["stdout"]) == chat_lines
    assert bot.proc.poll() is None


def test_bot_dies_on_sigterm_and_leaves_its_files(
    tmp_path: Path, spawn: Spawn, notify_socket: Callable[[], NotifyListener]
) -> None:
    listener = notify_socket()
    bot = spawn(
        "bot", "--channel", "term", cwd=tmp_path, env=demo_env(NOTIFY_SOCKET=listener.address)
    )
    listener.wait_for("READY=1", bot)
    bot.signal(signal.SIGTERM)
    assert bot.wait() == -signal.SIGTERM
    for suffix in BOT_FILES:
        assert (tmp_path / "pids" / f"term.{suffix}").exists(), suffix


def test_bot_ignoring_sigterm_needs_sigkill(tmp_path: Path, spawn: Spawn) -> None:
    bot = spawn(
        "bot", "--channel", "stubborn", "--ignore-sigterm", "--chat-interval", "0.05", cwd=tmp_path
    )
    seen = bot.wait_for_line("stdout", "joined #stubborn")
    bot.signal(signal.SIGTERM)
    # A killed bot could finish at most the line it was writing; three more
    # chat lines mean it is still running its loop.
    for _ in range(3):
        seen = bot.wait_for_line("stdout", "chat tick", after=seen + 1)
    assert bot.proc.poll() is None
    bot.signal(signal.SIGKILL)
    assert bot.wait() == -signal.SIGKILL


def test_bot_shows_only_the_length_of_its_credential(tmp_path: Path, spawn: Spawn) -> None:
    secret = "oauth:s3cr3t-t0ken-value"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "token").write_text(secret + "\n")
    bot = spawn(
        "bot",
        "--channel",
        "creds",
        cwd=tmp_path,
        env=demo_env(CREDENTIALS_DIRECTORY=str(credentials)),
    )
    line = bot.wait_for_line("stdout", "credential:")
    assert bot.lines["stdout"][line] == f"credential: token present ({len(secret) + 1} bytes)"
    bot.wait_for_line("stdout", "joined #creds")
    bot.signal(signal.SIGKILL)
    bot.wait()
    output = "\n".join(bot.lines["stdout"] + bot.lines["stderr"])
    assert "s3cr3t" not in output


def test_bot_floods_stdout_when_asked(tmp_path: Path, spawn: Spawn) -> None:
    bot = spawn("bot", "--channel", "loud", "--flood", cwd=tmp_path)
    assert bot.read_stdout_bytes(4 << 20) >= 4 << 20
    assert bot.proc.poll() is None


def test_bot_eats_memory_when_asked(tmp_path: Path, spawn: Spawn) -> None:
    bot = spawn("bot", "--channel", "greedy", "--eat-mib", "48", cwd=tmp_path)
    bot.wait_for_line("stderr", "ate 48 MiB (demo --eat-mib)")
    status = Path(f"/proc/{bot.proc.pid}/status").read_text()
    rss_kib = int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1])
    assert rss_kib >= 48 * 1024  # written, so resident: it counts against a memory limit
    assert bot.proc.poll() is None


def test_bot_relays_broadcast_files(tmp_path: Path, spawn: Spawn) -> None:
    bot = spawn("bot", "--channel", "listener", "--broadcast-poll", "0.05", cwd=tmp_path)
    bot.wait_for_line("stdout", "joined #listener")
    inbox = tmp_path / "pids" / "listener.broadcast_in"
    # Written aside and renamed in, so the bot never reads half a file.
    (tmp_path / "pids" / "broadcast.tmp").write_text("other|hello everyone\n")
    (tmp_path / "pids" / "broadcast.tmp").rename(inbox)
    bot.wait_for_line("stdout", "broadcast from #other: hello everyone")
    assert not inbox.exists()


# -- the hub ---------------------------------------------------------------------


def test_hub_protocol(
    tmp_path: Path,
    short_dir: Path,
    spawn: Spawn,
    notify_socket: Callable[[], NotifyListener],
) -> None:
    sock = short_dir / "hub.sock"
    start_hub(spawn, tmp_path, sock, notify_socket())
    client = HubClient(sock)
    try:
        assert client.ask({"type": "ping", "timestamp": 1}) == {
            "type": "error",
            "cmd": "ping",
            "code": "not_registered",
            "detail": "send hello before ping",
        }
        hello: dict[str, object] = {
            "type": "hello",
            "channel": "alpha",
            "channel_id": "42",
            "topics": ["a", "b"],
        }
        assert client.ask(hello) == {
            "type": "ack",
            "cmd": "hello",
            "channel_id": "42",
            "topic": "",
            "status": "ok",
        }
        assert client.ask({"type": "ping", "timestamp": 1234}) == {
            "type": "pong",
            "timestamp": 1234,
        }
        for cmd in ("subscribe", "unsubscribe"):
            assert client.ask({"type": cmd, "channel_id": "42", "topic": "stream.online"}) == {
                "type": "ack",
                "cmd": cmd,
                "channel_id": "42",
                "topic": "stream.online",
                "status": "ok",
            }
        # An unknown key: dropped without a reply, so the next reply is the next ping's.
        client.send({"type": "ping", "timestamp": 1, "extra": True})
        assert client.ask({"type": "ping", "timestamp": 2}) == {"type": "pong", "timestamp": 2}
        bad = client.ask(b"{not json\n")
        assert (bad["type"], bad["code"]) == ("error", "bad_json")
        odd = client.ask({"type": "dance"})
        assert (odd["type"], odd["code"]) == ("error", "unknown_type")
        # Still serving after the bad input.
        assert client.ask({"type": "ping", "timestamp": 3}) == {"type": "pong", "timestamp": 3}
    finally:
        client.close()


def test_hub_replaces_a_stale_socket_and_removes_it_on_sigterm(
    tmp_path: Path,
    short_dir: Path,
    spawn: Spawn,
    notify_socket: Callable[[], NotifyListener],
) -> None:
    sock = short_dir / "hub.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays behind, as after a crashed hub
    with pytest.raises(ConnectionRefusedError):
        HubClient(sock)
    (tmp_path / "logs").mkdir()

    hub = start_hub(spawn, tmp_path, sock, notify_socket())
    HubClient(sock).close()
    hub.signal(signal.SIGTERM)
    assert hub.wait() == 0
    assert not sock.exists()
    assert "listening on" in (tmp_path / "logs" / "eventsub_hub.log").read_text()


def test_hub_records_its_websocket_state_in_an_existing_db(
    tmp_path: Path,
    short_dir: Path,
    spawn: Spawn,
    notify_socket: Callable[[], NotifyListener],
) -> None:
    sqlite3.connect(tmp_path / "kissbot.db").close()  # an empty DB file
    start_hub(spawn, tmp_path, short_dir / "hub.sock", notify_socket())
    # Written before READY=1 is sent.
    with contextlib.closing(sqlite3.connect(tmp_path / "kissbot.db")) as db:
        rows = db.execute("SELECT value FROM hub_state WHERE key = 'ws_state'").fetchall()
    assert rows == [("connected",)]


def test_hub_crash_leaves_its_socket_behind(
    tmp_path: Path,
    short_dir: Path,
    spawn: Spawn,
    notify_socket: Callable[[], NotifyListener],
) -> None:
    sock = short_dir / "hub.sock"
    hub = start_hub(spawn, tmp_path, sock, notify_socket(), "--crash-after=0", "--exit-code=5")
    assert hub.wait() == 5
    assert stat.S_ISSOCK(sock.lstat().st_mode)


def test_hub_with_exit_code_exits_before_listening(
    tmp_path: Path, short_dir: Path, spawn: Spawn
) -> None:
    sock = short_dir / "hub.sock"
    hub = spawn("hub", "--socket", str(sock), "--exit-code", "3", cwd=tmp_path)
    assert hub.wait() == 3
    assert not sock.exists()


def test_bot_registers_with_the_hub_and_gets_pongs(
    tmp_path: Path,
    short_dir: Path,
    spawn: Spawn,
    notify_socket: Callable[[], NotifyListener],
) -> None:
    sock = short_dir / "hub.sock"
    hub_listener = notify_socket()
    hub = start_hub(spawn, tmp_path, sock, hub_listener)
    bot_listener = notify_socket()
    # Exactly the upstream bot argv in hub mode.
    bot = spawn(
        "bot",
        "--channel",
        "beta",
        "--config",
        "config/config.yaml",
        "--eventsub",
        "hub",
        "--use-db",
        "--db",
        "kissbot.db",
        "--hub-socket",
        str(sock),
        "--ping-interval",
        "0.05",
        cwd=tmp_path,
        env=demo_env(NOTIFY_SOCKET=bot_listener.address),
    )
    bot_listener.wait_for("READY=1", bot)
    assert (tmp_path / "pids" / "beta.eventsub").exists()
    hub_listener.wait_for("STATUS=1 bots connected", hub)
    bot.wait_for_line("stdout", "pong from hub")
    bot.signal(signal.SIGKILL)
    bot.wait()
    hub_listener.wait_for("STATUS=0 bots connected", hub)


# -- the command line ---------------------------------------------------------


@pytest.mark.parametrize("args", [("--help",), ("bot", "--help"), ("hub", "--help")])
def test_help(args: tuple[str, ...], tmp_path: Path) -> None:
    result = subprocess.run(
        [*DEMO, *args], cwd=tmp_path, env=demo_env(), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m kissbot_supervisor.demo")


def test_bad_flags_are_explained(tmp_path: Path) -> None:
    result = subprocess.run(
        [*DEMO, "bot", "--channel", "x", "--ping-interval", "soon"],
        cwd=tmp_path,
        env=demo_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "--ping-interval" in result.stderr
    assert not (tmp_path / "pids").exists()


def test_a_bot_imports_little(tmp_path: Path) -> None:
    # Hundreds of demo bots share a small machine: the start-up path must not
    # pull in argparse, the hub, or anything heavier.
    code = (
        "import sys\n"
        "from kissbot_supervisor.demo.__main__ import main\n"
        "main(['bot', '--channel', 'light', '--eventsub', 'direct', '--exit-code', '0'])\n"
        "heavy = {'argparse', 'json', 'socket', 'typing', 'asyncio', 'yaml', 'logging',\n"
        "         'dataclasses', 'sqlite3', 'kissbot_supervisor.demo.hub'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=demo_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines()[-1] == "[]"
