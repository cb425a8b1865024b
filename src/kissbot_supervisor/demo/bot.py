"""A demo KissBot bot: behaves like ``main.py --channel CH`` as far as a supervisor can see.

It accepts the upstream bot's command line, runs in the KissBot root, writes the
same ``pids/`` files, speaks the hub IPC protocol once (one connection attempt,
no reconnect) and has no SIGTERM handler, so it leaves its files behind when
killed. Unlike upstream it also speaks sd_notify (through
``kissbot_supervisor.notify``), which is what the opt-in helper is for.

One selectors loop does everything, so a hang (``--hang-after``) really stops
the watchdog pings too.
"""

from __future__ import annotations

import os
import selectors
import sys
import time

from kissbot_supervisor import notify
from kissbot_supervisor.demo import common
from kissbot_supervisor.demo.common import Flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any

# Upstream defaults and limits, mirrored so the demo fails the same way.
DEFAULT_HUB_SOCKET = "/tmp/kissbot_hub.sock"
HUB_CONNECT_TIMEOUT = 5.0
# How long to wait for the hub's hello ack before going ready without it.
HELLO_ACK_TIMEOUT = 5.0
DEFAULT_TOPICS = "stream.online,stream.offline"
# What the real bot connects to first; --twitch stands in for it.
TWITCH_CHAT = ("irc.chat.twitch.tv", 6697)
TWITCH_CONNECT_TIMEOUT = 5.0
FLOOD_CHUNK_LINES = 64


UPSTREAM = "upstream main.py flags (accepted so the demo can stand in)"
DEMO = "demo behaviour"


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets: ``[::1]:6697``)."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host.strip("[]"), int(port)


def channel_login(text: str) -> str:
    """A channel login that is safe as part of a file name under pids/ and logs/."""
    if not text or "/" in text or "\0" in text or text in (".", ".."):
        raise ValueError(f"not usable as a channel login: {text!r}")
    return text


FLAGS = (
    Flag("--channel", "Twitch channel login", group=UPSTREAM, convert=channel_login, required=True),
    Flag("--config", "KissBot config (ignored)", group=UPSTREAM, metavar="CFG"),
    Flag(
        "--eventsub",
        "hub, direct or disabled; default: hub when --hub-socket is given, else direct",
        group=UPSTREAM,
        choices=("hub", "direct", "disabled"),
        metavar="MODE",
    ),
    Flag("--use-db", "read tokens from the DB (ignored)", group=UPSTREAM, convert=None),
    Flag("--db", "SQLite DB (ignored)", group=UPSTREAM, metavar="DB"),
    Flag(
        "--hub-socket",
        f"EventSub hub socket (default in hub mode: {DEFAULT_HUB_SOCKET})",
        group=UPSTREAM,
        metavar="SOCK",
    ),
    Flag(
        "--channel-id", "broadcaster id sent in hello (default: derived)", group=DEMO, metavar="ID"
    ),
    Flag(
        "--topics",
        f"EventSub topics sent in hello (default {DEFAULT_TOPICS})",
        group=DEMO,
        default=DEFAULT_TOPICS,
        metavar="T1,T2",
    ),
    Flag(
        "--ping-interval",
        "seconds between hub pings; 0 turns them off (default 30)",
        group=DEMO,
        convert=common.seconds,
        default=30.0,
        metavar="S",
    ),
    Flag(
        "--chat-interval",
        "seconds between chat lines on stdout once ready; 0 turns them off (default 10)",
        group=DEMO,
        convert=common.seconds,
        default=10.0,
        metavar="S",
    ),
    Flag(
        "--system-log-interval",
        "seconds between lines in logs/broadcast/CH/system.log once ready; "
        "0 turns it off (default 60, like upstream)",
        group=DEMO,
        convert=common.seconds,
        default=60.0,
        metavar="S",
    ),
    Flag(
        "--broadcast-poll",
        "seconds between checks of pids/CH.broadcast_in; 0 turns it off (default 1)",
        group=DEMO,
        convert=common.seconds,
        default=1.0,
        metavar="S",
    ),
    Flag("--no-ready-file", "never write pids/CH.ready", group=DEMO, convert=None),
    Flag(
        "--twitch",
        "at start-up, before ready, open a TCP connection to HOST:PORT, a stand-in for "
        "Twitch chat; when it fails, print aiohttp's error line and exit 1, as the real "
        "bot does when Twitch cannot be reached",
        group=DEMO,
        convert=host_port,
        metavar="HOST:PORT",
    ),
    *common.fault_flags("bot"),
    Flag(
        "--flood",
        "once ready, write to stdout as fast as possible, forever",
        group=common.FAULTS,
        convert=None,
    ),
    Flag(
        "--eat-mib",
        "once ready, allocate and touch N MiB, one MiB at a time, and keep it "
        "(a bot that outgrows its memory limit)",
        group=common.FAULTS,
        convert=int,
        metavar="N",
    ),
)


def derive_channel_id(channel: str) -> str:
    """A stable fake broadcaster id (FNV-1a of the login), so a demo fleet needs no setup."""
    digest = 0x811C9DC5
    for byte in channel.encode("utf-8"):
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return str(100_000_000 + digest % 900_000_000)


class _Options:
    """The parsed flags with real types."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.channel: str = values["channel"]
        self.channel_id: str = values["channel_id"] or derive_channel_id(self.channel)
        self.topics: list[str] = [t for t in str(values["topics"]).split(",") if t]
        hub_socket: str | None = values["hub_socket"]
        mode: str | None = values["eventsub"]
        if mode is None:
            mode = "hub" if hub_socket else "direct"
        self.eventsub: str = mode
        self.hub_socket: str | None = (hub_socket or DEFAULT_HUB_SOCKET) if mode == "hub" else None
        self.ping_interval: float = values["ping_interval"]
        self.chat_interval: float = values["chat_interval"]
        self.system_log_interval: float = values["system_log_interval"]
        self.broadcast_poll: float = values["broadcast_poll"]
        self.ready_file: bool = not values["no_ready_file"]
        self.twitch: tuple[str, int] | None = values["twitch"]
        self.exit_code: int | None = values["exit_code"]
        self.crash_after: float | None = values["crash_after"]
        self.hang_after: float | None = values["hang_after"]
        self.ignore_sigterm: bool = values["ignore_sigterm"]
        self.ready_delay: float = values["ready_delay"]
        self.flood: bool = values["flood"]
        self.eat_mib: int | None = values["eat_mib"]


def _every(interval: float, now: float) -> float | None:
    """First deadline of a periodic job; None when the interval (0) turns it off."""
    return now + interval if interval > 0 else None


class DemoBot:
    """One channel's demo bot; all state lives here, driven by ``run``."""

    def __init__(self, options: _Options) -> None:
        self.opt = options
        ch = options.channel
        self.log = common.Logger(f"demo-bot[#{ch}]")
        self.pid_file = os.path.join("pids", f"{ch}.pid")
        self.flag_prefix = os.path.join("pids", ch)
        self.selector = selectors.DefaultSelector()
        self.hub: socket.socket | None = None
        self.hub_buffer = bytearray()
        # The hub half of "ready": settled once the hello is acked, the ack
        # wait has timed out, or there is no hub to wait for.
        self.hub_settled = False
        self.ack_deadline: float | None = None
        self.is_ready = False
        self.hoard: list[bytes] = []  # --eat-mib's memory, kept alive

    # -- output -----------------------------------------------------------

    def say(self, text: str) -> None:
        """One line on stdout, like the bot's chat echo (flushed: a pipe reader sees it now)."""
        sys.stdout.write(f"[#{self.opt.channel}] {text}\n")
        sys.stdout.flush()

    def flag(self, suffix: str) -> None:
        common.write_text(f"{self.flag_prefix}.{suffix}", common.pid_line())

    # -- start-up ---------------------------------------------------------

    def run(self) -> int:
        opt = self.opt
        if opt.ignore_sigterm:
            # Deferred imports here and below: json, socket and signal pull in
            # re and enum, ~0.8 MiB a bot, and a bot without a hub needs none.
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.say(f"demo bot starting (pid {os.getpid()}, eventsub {opt.eventsub})")
        os.makedirs("pids", exist_ok=True)
        common.write_text(self.pid_file, common.pid_line())
        self.flag("starting")

        try:
            failure = self.check_credential()
            if failure is not None:
                return failure
            if opt.exit_code is not None and opt.crash_after is None:
                # Upstream exits 1 on every fatal start-up error (revoked token...).
                self.log("ERROR", f"fatal start-up error (demo --exit-code {opt.exit_code})")
                return opt.exit_code
            if opt.twitch is not None and not self.reach_twitch(*opt.twitch):
                return 1
            self.connect_hub()
            return self.loop()
        finally:
            if self.hub is not None:
                self.hub.close()
            self.selector.close()

    def check_credential(self) -> int | None:
        """Read the systemd credential if one is passed; show its size, never its value."""
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            return None
        try:
            with open(os.path.join(directory, "token"), "rb") as handle:
                size = len(handle.read())
        except OSError as error:
            self.log("ERROR", f"credential: cannot read token: {error.strerror}")
            return 1
        # Exactly this line (no channel prefix): tests and docs match it verbatim.
        sys.stdout.write(f"credential: token present ({size} bytes)\n")
        sys.stdout.flush()
        return None

    def reach_twitch(self, host: str, port: int) -> bool:
        """Connect to the stand-in Twitch once; on failure say it as the real bot's
        uncaught aiohttp error says it (its last stderr line, which the supervisor
        shows), naming Twitch's host and the address really tried."""
        import socket

        try:
            family, kind, proto, _name, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )[0]
        except OSError as error:
            why = error.strerror or str(error)
        else:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(TWITCH_CONNECT_TIMEOUT)
                try:
                    sock.connect(address)
                    return True
                except TimeoutError:
                    why = "timed out"
                except OSError as error:
                    # asyncio's words for a refused or unreachable address.
                    why = f"Connect call failed {address!r}"
                    if not isinstance(error, ConnectionRefusedError):
                        why = error.strerror or str(error)
        self.log("ERROR", f"cannot reach Twitch chat at {host}:{port} (demo --twitch)")
        twitch_host, twitch_port = TWITCH_CHAT
        sys.stderr.write(
            "aiohttp.client_exceptions.ClientConnectorError: Cannot connect to host "
            f"{twitch_host}:{twitch_port} ssl:default [{why}]\n"
        )
        sys.stderr.flush()
        return False

    def connect_hub(self) -> None:
        """One connection attempt with a 5 s timeout, as upstream; a failure is not retried."""
        path = self.opt.hub_socket
        if path is None:
            self.hub_settled = True
            if self.opt.eventsub == "direct":
                self.flag("eventsub")
            return
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(HUB_CONNECT_TIMEOUT)
        try:
            sock.connect(path)
            sock.sendall(
                common.encode(
                    {
                        "type": "hello",
                        "channel": self.opt.channel,
                        "channel_id": self.opt.channel_id,
                        "topics": self.opt.topics,
                    }
                )
            )
        except OSError as error:
            sock.close()
            self.log("ERROR", f"EventSub hub unreachable at {path}: {error}; running without it")
            self.hub_settled = True
            return
        self.hub = sock
        self.selector.register(sock, selectors.EVENT_READ)
        self.ack_deadline = time.monotonic() + HELLO_ACK_TIMEOUT
        self.log("INFO", f"connected to EventSub hub at {path}")

    # -- main loop --------------------------------------------------------

    def loop(self) -> int:
        opt = self.opt
        start = time.monotonic()
        ready_at = start + opt.ready_delay
        pinger = notify.WatchdogPinger(now=start)
        self.flag("irc")  # the demo's IRC "join" is instant
        next_ping = _every(opt.ping_interval, start) if self.hub is not None else None
        next_poll = _every(opt.broadcast_poll, start)
        next_chat: float | None = None
        next_system_log: float | None = None
        crash_at: float | None = None
        hang_at: float | None = None
        flood_chunk = f"[#{opt.channel}] flood {'x' * 100}\n".encode() * FLOOD_CHUNK_LINES

        while True:
            now = time.monotonic()
            if not self.hub_settled and self.ack_deadline is not None and now >= self.ack_deadline:
                self.log("WARNING", "no hello ack from the EventSub hub; going on without it")
                self.hub_settled = True
            if not self.is_ready and self.hub_settled and now >= ready_at:
                self.become_ready()
                next_chat = _every(opt.chat_interval, now)
                next_system_log = now if opt.system_log_interval > 0 else None
                if opt.crash_after is not None:
                    crash_at = now + opt.crash_after
                if opt.hang_after is not None:
                    hang_at = now + opt.hang_after
                if opt.eat_mib is not None:
                    self.eat(opt.eat_mib)
            if crash_at is not None and now >= crash_at:
                code = 1 if opt.exit_code is None else opt.exit_code
                self.log("ERROR", f"crashing with status {code} (demo --crash-after)")
                return code
            if hang_at is not None and now >= hang_at:
                # The last words before silence, so tests can await the hang.
                self.log("WARNING", "hanging now (demo --hang-after)")
                common.hang_forever()
            if next_chat is not None and now >= next_chat:
                self.say(f"chat tick {time.strftime('%H:%M:%S')}")
                next_chat = now + opt.chat_interval
            if next_ping is not None and now >= next_ping:
                self.send_hub({"type": "ping", "timestamp": int(time.time())})
                next_ping = now + opt.ping_interval if self.hub is not None else None
            if next_poll is not None and now >= next_poll:
                self.poll_broadcast()
                next_poll = now + opt.broadcast_poll
            if next_system_log is not None and now >= next_system_log:
                self.write_system_log()
                next_system_log = now + opt.system_log_interval
            pinger.ping_if_due(now)

            if self.is_ready and opt.flood:
                # Blocks once a pipe nobody drains is full: that is the test.
                os.write(sys.stdout.fileno(), flood_chunk)
                timeout: float | None = 0.0
            else:
                deadline = common.earliest(
                    None if self.is_ready else ready_at,
                    None if self.hub_settled else self.ack_deadline,
                    crash_at,
                    hang_at,
                    next_chat,
                    next_ping,
                    next_poll,
                    next_system_log,
                    pinger.next_due(),
                )
                timeout = common.select_timeout(deadline, now)
            for _key, _events in self.selector.select(timeout):
                self.read_hub()

    def become_ready(self) -> None:
        """IRC joined and EventSub settled: say so in every way a supervisor may look."""
        self.is_ready = True
        if self.opt.ready_file:
            self.flag("ready")
        notify.ready()
        notify.status(f"joined #{self.opt.channel}")
        self.say(f"joined #{self.opt.channel}")

    def eat(self, mib: int) -> None:
        """Allocate ``mib`` MiB of written (resident) memory and keep it for good.

        One MiB at a time, each byte set: untouched pages would not count against
        a memory limit, and a limit is reached mid-way, as a leaking bot reaches it.
        """
        for done in range(1, mib + 1):
            self.hoard.append(b"\x01" * (1 << 20))
            if done % 64 == 0 and done < mib:
                self.log("INFO", f"ate {done} MiB so far (demo --eat-mib)")
        self.log("INFO", f"ate {mib} MiB (demo --eat-mib)")

    # -- hub IPC ----------------------------------------------------------

    def send_hub(self, message: dict[str, object]) -> None:
        if self.hub is None:
            return
        try:
            self.hub.sendall(common.encode(message))
        except OSError as error:
            self.hub_lost(f"send failed: {error}")

    def read_hub(self) -> None:
        if self.hub is None:
            return
        try:
            data = self.hub.recv(65536)
        except OSError as error:
            self.hub_lost(f"receive failed: {error}")
            return
        if not data:
            self.hub_lost("hub closed the connection")
            return
        self.hub_buffer += data
        for line in common.take_lines(self.hub_buffer):
            self.handle_hub_line(line)
        if len(self.hub_buffer) > common.MAX_LINE:
            self.hub_lost("over-long line from hub")

    def hub_lost(self, why: str) -> None:
        """Upstream never reconnects to a restarted hub; neither does the demo."""
        if self.hub is None:
            return
        self.log("ERROR", f"EventSub hub connection lost ({why}); not reconnecting")
        self.selector.unregister(self.hub)
        self.hub.close()
        self.hub = None
        self.hub_settled = True

    def handle_hub_line(self, line: bytes) -> None:
        try:
            message = common.decode(line)
        except ValueError:
            self.log("WARNING", f"unparsable line from hub: {line[:200]!r}")
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "pong":
            self.say(f"pong from hub (timestamp {message.get('timestamp')})")
        elif kind == "ack":
            if message.get("cmd") == "hello" and not self.hub_settled:
                self.hub_settled = True
                self.flag("eventsub")
                self.log("INFO", "registered with the EventSub hub")
        elif kind == "event":
            self.say(f"event {message.get('topic')} for channel {message.get('channel_id')}")
        elif kind == "error":
            self.log("WARNING", f"hub error: {message.get('code')}: {message.get('detail')}")

    # -- files other KissBot parts read ------------------------------------

    def poll_broadcast(self) -> None:
        """Consume ``pids/CH.broadcast_in`` (written by the supervisor's broadcast relay)."""
        path = f"{self.flag_prefix}.broadcast_in"
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as error:
            self.log("WARNING", f"cannot consume {path}: {error.strerror}")
            return
        for line in text.splitlines():
            source, _sep, body = line.partition("|")
            self.say(f"broadcast from #{source}: {body}")

    def write_system_log(self) -> None:
        """The minutely CPU/RAM line upstream writes; its mtime is a liveness signal."""
        directory = os.path.join("logs", "broadcast", self.opt.channel)
        try:
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, "system.log"), "a", encoding="utf-8") as handle:
                cpu = sum(os.times()[:2])
                handle.write(
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')} CPU: {cpu:.2f}s RAM: {_rss_kib()} KiB\n"
                )
        except OSError as error:
            self.log("WARNING", f"cannot write system.log: {error.strerror}")


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def run(values: dict[str, Any]) -> int:
    """Run the demo bot until it crashes, hangs or is killed; return the exit status.

    ``values`` maps each flag's dest to its value (``common.parse_flags``).
    """
    return DemoBot(_Options(values)).run()
