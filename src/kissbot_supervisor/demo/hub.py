"""A demo EventSub hub: behaves like ``eventsub_hub.py`` as far as a supervisor and bots can see.

It accepts the upstream hub's command line, unlinks a stale socket, binds and
listens, and serves the hub IPC protocol (JSON lines over a Unix stream socket)
to many bots from one selectors loop. There is no Twitch WebSocket; the hub
records the same ``hub_state.ws_state`` values upstream writes when the DB
file exists. SIGTERM and SIGINT unlink the socket and exit 0, as upstream.
Unlike upstream it speaks sd_notify and survives a missing ``logs/``.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import stat
import sys
import time

from kissbot_supervisor import notify
from kissbot_supervisor.demo import common
from kissbot_supervisor.demo.common import Flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any, NoReturn, TextIO

DEFAULT_SOCKET = "/tmp/kissbot_hub.sock"
LOG_PATH = os.path.join("logs", "eventsub_hub.log")
# A bot that stops reading while we queue replies for it gets cut off here
# rather than growing the hub without bound.
MAX_PENDING_OUTPUT = 1024 * 1024

# The keys each message type may carry; a message with any other key is
# dropped without a reply (upstream behaviour).
_KEYS = {
    "hello": frozenset({"type", "channel", "channel_id", "topics"}),
    "subscribe": frozenset({"type", "channel_id", "topic"}),
    "unsubscribe": frozenset({"type", "channel_id", "topic"}),
    "ping": frozenset({"type", "timestamp"}),
}


UPSTREAM = "upstream eventsub_hub.py flags (accepted so the demo can stand in)"

FLAGS = (
    Flag(
        "--socket",
        f"Unix socket to listen on (default {DEFAULT_SOCKET})",
        group=UPSTREAM,
        default=DEFAULT_SOCKET,
        metavar="SOCK",
    ),
    Flag("--config", "KissBot config (ignored)", group=UPSTREAM, metavar="CFG"),
    Flag(
        "--db",
        "SQLite DB; if the file exists, hub_state.ws_state is written as upstream does",
        group=UPSTREAM,
        metavar="DB",
    ),
    Flag(
        "--listen-delay",
        "wait S seconds before binding the socket (a hub slow to start: another "
        "process may hold the path meanwhile)",
        group=common.FAULTS,
        convert=common.seconds,
        default=0.0,
        metavar="S",
    ),
    Flag(
        "--wedge",
        "behave like the real hub without Twitch: bind the socket, record ws_state "
        "'connecting', then accept connections and answer nothing (no pong), never become "
        "ready, and ignore SIGTERM and SIGINT (only SIGKILL stops it)",
        group=common.FAULTS,
        convert=None,
    ),
    *common.fault_flags("hub"),
)


class _Options:
    """The parsed flags with real types."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.socket_path: str = values["socket"]
        self.db: str | None = values["db"]
        self.exit_code: int | None = values["exit_code"]
        self.crash_after: float | None = values["crash_after"]
        self.hang_after: float | None = values["hang_after"]
        self.ignore_sigterm: bool = values["ignore_sigterm"]
        self.ready_delay: float = values["ready_delay"]
        self.listen_delay: float = values["listen_delay"]
        self.wedge: bool = values["wedge"]


class _Client:
    """One bot connection: its buffers and what its hello said."""

    __slots__ = ("channel", "channel_id", "inbox", "outbox", "sock", "topics")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.channel: str | None = None  # set by hello: the connection is registered
        self.channel_id = ""
        self.topics: set[str] = set()


class DemoHub:
    """The hub's state and its selectors loop."""

    def __init__(self, options: _Options, log: common.Logger) -> None:
        self.opt = options
        self.log = log
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.bound_inode: int | None = None
        self.clients: dict[int, _Client] = {}
        self.registered = 0
        self.wake: socket.socket | None = None
        self.stop_signal: int | None = None

    # -- start-up and shutdown --------------------------------------------

    def run(self) -> int:
        opt = self.opt
        if opt.exit_code is not None and opt.crash_after is None:
            self.log("ERROR", f"fatal start-up error (demo --exit-code {opt.exit_code})")
            return opt.exit_code
        # The handlers only record the signal; the wakeup fd makes select()
        # return even when the signal lands just before it is entered. Raising
        # from a handler instead gets swallowed whenever it interrupts an
        # `except Exception` or a bare `except` (sdnotify's send has one), and
        # the hub would ignore that SIGTERM.
        wake, wake_writer = socket.socketpair()
        wake.setblocking(False)
        wake_writer.setblocking(False)
        self.wake = wake
        self.selector.register(wake, selectors.EVENT_READ)
        signal.set_wakeup_fd(wake_writer.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGINT, self.on_stop_signal)
        if opt.wedge:
            # The real hub's EventSub connect loop never gets back to its handlers.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        elif opt.ignore_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGTERM, self.on_stop_signal)
        # Only an orderly stop removes the socket: a crash leaves it behind,
        # as a crashed upstream hub does.
        clean_exit = False
        try:
            time.sleep(opt.listen_delay)
            self.listen()
            status = self.loop()
            clean_exit = True
            return status
        finally:
            signal.set_wakeup_fd(-1)
            self.close(unlink=clean_exit)
            wake_writer.close()

    def on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signal = signum

    def listen(self) -> None:
        path = self.opt.socket_path
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise SystemExit(f"demo hub: {path} exists and is not a socket; not removing it")
            # Upstream unlinks whatever socket is there, even a live hub's.
            os.unlink(path)
            self.log("INFO", f"removed stale socket {path}")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(512)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self.listener = listener
        self.bound_inode = os.stat(path).st_ino
        self.selector.register(listener, selectors.EVENT_READ)
        self.log("INFO", f"listening on {path}")

    def close(self, *, unlink: bool) -> None:
        for client in list(self.clients.values()):
            client.sock.close()
        self.clients.clear()
        if self.wake is not None:
            self.wake.close()
            self.wake = None
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.selector.close()
        if unlink and self.bound_inode is not None:
            path = self.opt.socket_path
            try:
                # Only our own socket: a newer hub may have replaced it.
                if os.stat(path).st_ino == self.bound_inode:
                    os.unlink(path)
            except OSError:
                pass

    # -- main loop --------------------------------------------------------

    def loop(self) -> int:
        opt = self.opt
        start = time.monotonic()
        pinger = notify.WatchdogPinger(now=start)
        write_ws_state(opt.db, "connecting", self.log)
        if opt.wedge:
            self.wedged()
        ready_at: float | None = start + opt.ready_delay
        crash_at: float | None = None
        hang_at: float | None = None

        while True:
            if self.stop_signal is not None:
                self.log("INFO", f"signal {self.stop_signal} received; shutting down")
                return 0
            now = time.monotonic()
            if ready_at is not None and now >= ready_at:
                ready_at = None
                write_ws_state(opt.db, "connected", self.log)
                notify.ready()
                self.announce()
                self.log("INFO", "EventSub WebSocket connected (demo); ready")
                if opt.crash_after is not None:
                    crash_at = now + opt.crash_after
                if opt.hang_after is not None:
                    hang_at = now + opt.hang_after
            if crash_at is not None and now >= crash_at:
                code = 1 if opt.exit_code is None else opt.exit_code
                self.log("ERROR", f"crashing with status {code} (demo --crash-after)")
                # Straight out, like a real crash: no unlink, no goodbye to bots.
                sys.stdout.flush()
                os._exit(code)
            if hang_at is not None and now >= hang_at:
                self.log("WARNING", "hanging now (demo --hang-after)")
                common.hang_forever()
            pinger.ping_if_due(now)
            deadline = common.earliest(ready_at, crash_at, hang_at, pinger.next_due())
            for key, events in self.selector.select(common.select_timeout(deadline, now)):
                if key.fileobj is self.wake:
                    self.drain_wake()
                elif key.fileobj is self.listener:
                    self.accept()
                else:
                    self.service(key.fd, events)

    def wedged(self) -> NoReturn:
        """Accept connections and never read them: what the real hub does while its
        Twitch connect loop blocks (the kernel would also queue connections unaccepted,
        but the real hub accepts them)."""
        assert self.listener is not None
        self.log("WARNING", "wedged (demo --wedge): accepting connections, answering nothing")
        self.listener.setblocking(True)
        held = []
        while True:
            try:
                held.append(self.listener.accept()[0])
            except OSError:
                common.hang_forever()  # out of descriptors: keep them, answer nothing

    def announce(self) -> None:
        notify.status(f"{self.registered} bots connected")

    def drain_wake(self) -> None:
        """Empty the signal wakeup socket; the handler has already set the flag."""
        assert self.wake is not None
        try:
            while self.wake.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # Out of fds and the like: keep serving the bots we have.
                self.log("WARNING", f"accept failed: {error}")
                return
            sock.setblocking(False)
            client = _Client(sock)
            self.clients[sock.fileno()] = client
            self.selector.register(sock, selectors.EVENT_READ)

    def service(self, fd: int, events: int) -> None:
        client = self.clients.get(fd)
        if client is None:
            return
        if events & selectors.EVENT_WRITE:
            self.flush(client)
        if events & selectors.EVENT_READ and fd in self.clients:
            self.receive(client)

    def receive(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(client)
            return
        client.inbox += data
        for line in common.take_lines(client.inbox):
            if client.sock.fileno() < 0:
                return
            self.handle_line(client, line)
        if len(client.inbox) > common.MAX_LINE:
            self.send(client, _error("", "line_too_long", f"no newline in {common.MAX_LINE} bytes"))
            self.drop(client)

    def drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if fd < 0 or self.clients.pop(fd, None) is None:
            return
        self.selector.unregister(client.sock)
        client.sock.close()
        if client.channel is not None:
            self.log("INFO", f"bot #{client.channel} disconnected")
            self.registered -= 1
            self.announce()

    # -- protocol ---------------------------------------------------------

    def handle_line(self, client: _Client, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except ValueError as error:
            self.send(client, _error("", "bad_json", str(error)))
            return
        if not isinstance(message, dict):
            self.send(client, _error("", "bad_message", "expected a JSON object"))
            return
        kind = message.get("type")
        if not isinstance(kind, str) or kind not in _KEYS:
            self.send(client, _error(str(kind), "unknown_type", f"unknown message type {kind!r}"))
            return
        if not _KEYS[kind].issuperset(message):
            return  # an unknown key: dropped, as upstream does
        if kind == "hello":
            self.hello(client, message)
        elif kind == "ping":
            self.ping(client, message)
        else:
            self.subscription(client, kind, message)

    def hello(self, client: _Client, message: dict[str, object]) -> None:
        channel = message.get("channel")
        channel_id = message.get("channel_id")
        topics = message.get("topics")
        if not (
            isinstance(channel, str)
            and isinstance(channel_id, str)
            and isinstance(topics, list)
            and all(isinstance(topic, str) for topic in topics)
        ):
            self.send(
                client,
                _error("hello", "bad_request", "hello needs channel, channel_id and topics"),
            )
            return
        newly = client.channel is None
        client.channel = channel
        client.channel_id = channel_id
        client.topics = {str(topic) for topic in topics}
        self.send(client, _ack("hello", channel_id, ""))
        if newly:
            self.registered += 1
            self.log("INFO", f"bot #{channel} registered ({channel_id})")
            self.announce()

    def ping(self, client: _Client, message: dict[str, object]) -> None:
        timestamp = message.get("timestamp")
        if client.channel is None:
            self.send(client, _error("ping", "not_registered", "send hello before ping"))
        elif not isinstance(timestamp, int) or isinstance(timestamp, bool):
            self.send(client, _error("ping", "bad_request", "timestamp must be an integer"))
        else:
            self.send(client, {"type": "pong", "timestamp": timestamp})

    def subscription(self, client: _Client, kind: str, message: dict[str, object]) -> None:
        channel_id = message.get("channel_id")
        topic = message.get("topic")
        if not (isinstance(channel_id, str) and isinstance(topic, str)):
            self.send(client, _error(kind, "bad_request", f"{kind} needs channel_id and topic"))
            return
        if kind == "subscribe":
            client.topics.add(topic)
        else:
            client.topics.discard(topic)
        self.send(client, _ack(kind, channel_id, topic))

    # -- output -----------------------------------------------------------

    def send(self, client: _Client, message: dict[str, object]) -> None:
        client.outbox += common.encode(message)
        if len(client.outbox) > MAX_PENDING_OUTPUT:
            self.log("WARNING", f"bot #{client.channel} does not read its replies; dropping it")
            self.drop(client)
            return
        self.flush(client)

    def flush(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.drop(client)
            return
        del client.outbox[:sent]
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbox else 0)
        if self.selector.get_key(client.sock).events != wanted:
            self.selector.modify(client.sock, wanted)


def _ack(cmd: str, channel_id: str, topic: str) -> dict[str, object]:
    return {"type": "ack", "cmd": cmd, "channel_id": channel_id, "topic": topic, "status": "ok"}


def _error(cmd: str, code: str, detail: str) -> dict[str, object]:
    return {"type": "error", "cmd": cmd, "code": code, "detail": detail}


def write_ws_state(db: str | None, value: str, log: common.Logger) -> None:
    """Record ``hub_state.ws_state`` like upstream, in an existing DB only.

    Upstream would fail on a missing DB; the demo just skips it, and never
    creates a DB file where the supervisor expects KissBot's own.
    """
    if not db or not os.path.isfile(db):
        return
    # Deferred: only the hub, and only with a DB, pays for sqlite3.
    import sqlite3

    try:
        connection = sqlite3.connect(db, timeout=5.0)
        try:
            with connection:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS hub_state "
                    "(key TEXT PRIMARY KEY, value TEXT, updated_at TIMESTAMP)"
                )
                connection.execute("DELETE FROM hub_state WHERE key = 'ws_state'")
                connection.execute(
                    "INSERT INTO hub_state (key, value, updated_at) "
                    "VALUES ('ws_state', ?, CURRENT_TIMESTAMP)",
                    (value,),
                )
        finally:
            connection.close()
    except sqlite3.Error as error:
        log("WARNING", f"cannot record ws_state={value} in {db}: {error}")


def _open_log(log: common.Logger) -> TextIO | None:
    # Upstream opens this at import time and crashes without logs/; the demo
    # only warns, so a bare test directory works.
    if not os.path.isdir("logs"):
        log("WARNING", f"no logs/ directory; not writing {LOG_PATH} (upstream would crash)")
        return None
    return open(LOG_PATH, "a", encoding="utf-8")  # closed by run()


def run(values: dict[str, Any]) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or an injected fault; return the exit status.

    ``values`` maps each flag's dest to its value (``common.parse_flags``).
    """
    options = _Options(values)
    log_file = _open_log(common.Logger("demo-hub"))
    try:
        hub = DemoHub(options, common.Logger("demo-hub", log_file))
        return hub.run()
    finally:
        if log_file is not None:
            log_file.close()
