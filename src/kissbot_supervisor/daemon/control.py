"""The control socket: JSON lines over a Unix stream socket, inside the event loop.

Who may talk is decided by the kernel's word on the peer (``SO_PEERCRED``):
root, the supervisor's own user, or a member of the operators' group
(``control_group``, ``kissbot-operators`` by default), but never the bots'
user or group, whatever groups they are in: a bot is internet-facing code,
and a taken-over one must not stop, start or read the fleet. The socket file
is also made group-operators and 0660 when that group exists, but the
credential check is what counts.

An ``events`` request turns its connection into a subscription: the server
answers it itself, then :meth:`ControlServer.broadcast` writes each event to
every subscriber; whatever else such a client sends is ignored. A subscriber
that does not read is dropped once ``MAX_PENDING_OUT`` bytes wait for it, so a
stuck client can neither block the loop nor grow the supervisor.

No client can hold supervision or the other clients: a connection's requests
are answered one at a time, the next one only once the last answer is sent
(a client that pipelines requests and never reads gets one answer queued and
is no longer read from), at most ``PER_TURN`` in one turn of the loop; a
connection idle for ``IDLE_SEC`` is closed, and when all ``MAX_CLIENTS`` slots
are taken the longest-idle connection makes room for a new one. Events
subscribers are at most ``MAX_SUBSCRIBERS``.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
from collections.abc import Callable
from pathlib import Path

from ..core.records import record
from ..protocol import MAX_LINE, ProtocolError, Request, encode, is_progress, parse_request
from ..runtime.fs import bind_unix
from ..runtime.loop import Loop, Timer, accepted, received
from ..runtime.procinfo import peer_credentials

# typing is imported for the type checker only (it costs the daemon 0.4 MiB).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..runtime.log import Log

    # Called once with the answer; before it, with the progress lines the request
    # asked for, if any (protocol.is_progress tells them apart).
    Reply = Callable[[dict[str, Any]], None]

MAX_CLIENTS = 64
MAX_SUBSCRIBERS = 32  # events streams: never all the slots
MAX_PENDING_OUT = 16 * 1024 * 1024  # a client that never reads is dropped
IDLE_SEC = 60.0  # a connection with no request for this long is closed
PER_TURN = 16  # requests of one connection answered in one turn of the loop
REFUSED_LINGER_SEC = 2.0  # a refused peer's time to read its error line and hang up
MAX_REFUSED = 16  # refused connections waiting for that at once; more are closed at once


@record
class Access:
    """Who may use the socket: the operators' group, and the bots' identities, which
    are refused whatever their groups (None: the bots run as the supervisor's user,
    so there is no boundary between them to keep)."""

    group: str
    bots_uid: int | None = None
    bots_gid: int | None = None

    def refusal(self, uid: int, gid: int, own_uid: int) -> str | None:
        """Why this peer may not talk to us, or None when it may."""
        if uid in (0, own_uid) and uid != self.bots_uid:
            return None
        if uid == self.bots_uid or gid == self.bots_gid:
            return "the bots' user or group may not drive the supervisor"
        try:
            group = grp.getgrnam(self.group)
        except KeyError:
            return f"you need to be root, the supervisor's user, or in group {self.group}"
        if gid == group.gr_gid:
            return None
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = None
        if user is not None and user in group.gr_mem:
            return None
        return f"you need to be root, the supervisor's user, or in group {self.group}"


def _discard_input(conn: socket.socket) -> bool:
    """Read and drop what a refused peer has sent so far; whether it is done (EOF
    or an error). Bounded and non-blocking: a peer that keeps sending is cut off."""
    try:
        for _ in range(16):
            if not conn.recv(65536):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    return False


class _Client:
    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = b""
        self.outbuf = bytearray()  # appended to and consumed in place: no copy per event
        self.subscribed = False
        self.waiting = False  # a command is waiting for its outcome (start, stop)
        self.active_at = now  # the last request, or the connection
        self.idle_timer: Timer | None = None
        self.more_timer: Timer | None = None
        self.mode = "read"  # what the loop waits for on it: "read", "write" or "none"

    @property
    def busy(self) -> bool:
        """An answer is owed or not sent yet: the next request waits for it."""
        return self.waiting or bool(self.outbuf)


class ControlServer:
    def __init__(
        self,
        loop: Loop,
        path: Path,
        handler: Callable[[Request, Reply], None],
        log: Log,
        access: Access | None = None,
    ) -> None:
        self.loop = loop
        self.path = path
        self.access = access or Access("kissbot-operators")
        self._handler = handler
        self._log = log
        self._clients: dict[int, _Client] = {}
        self._refused: dict[int, tuple[socket.socket, Timer]] = {}  # hanging up (_refuse)
        # Event subscribers; the daemon builds no event at all while this is empty.
        self.subscribers: list[_Client] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._refuse_if_live(path)
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._bind(path)
        self.sock.listen(64)
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._accept)

    @staticmethod
    def _refuse_if_live(path: Path) -> None:
        """A socket that answers belongs to a running supervisor: never steal it."""
        if not path.exists():
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(path))
            except OSError:
                return  # stale: nobody listens
        raise OSError(
            f"another supervisor is already listening on {path}; stop it first or give "
            "this one another --control-socket"
        )

    def _bind(self, path: Path) -> None:
        """0660 with the operators' group when there is one (and we may give it), else 0600."""
        try:
            gid: int | None = grp.getgrnam(self.access.group).gr_gid
        except KeyError:
            gid = None
        if gid is None:
            bind_unix(self.sock, path, 0o600)
            return
        try:
            bind_unix(self.sock, path, 0o660, gid)
        except PermissionError:
            # Not allowed to give it that group (no CAP_CHOWN): ours alone, then.
            self.sock.close()
            path.unlink(missing_ok=True)
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            bind_unix(self.sock, path, 0o600)

    def _accept(self) -> None:
        for conn in accepted(self.sock, self._accept_failed):
            pid, uid, gid = peer_credentials(conn)
            why = self.access.refusal(uid, gid, os.getuid())
            if why is not None:
                self._log.info(
                    "control", f"refused a client (PID {pid}, UID {uid}, GID {gid}): {why}"
                )
                self._refuse(conn, f"permission denied: {why}")
                continue
            if len(self._clients) >= MAX_CLIENTS and not self._make_room():
                conn.close()
                continue
            conn.setblocking(False)
            client = _Client(conn, self.loop.now())
            self._clients[conn.fileno()] = client
            self.loop.add_reader(conn.fileno(), lambda c=client: self._read(c))  # type: ignore[misc]
            self._arm_idle(client)

    def _wait_for(self, client: _Client, mode: str) -> None:
        """Have the loop wait on the connection for ``mode``: "read", "write" or "none"."""
        fd = client.sock.fileno()
        if fd < 0 or client.mode == mode:
            return
        if client.mode == "read":
            self.loop.remove_reader(fd)
        elif client.mode == "write":
            self.loop.remove_writer(fd)
        client.mode = mode
        if mode == "read":
            self.loop.add_reader(fd, lambda: self._read(client))
        elif mode == "write":
            self.loop.add_writer(fd, lambda: self._flush(client))

    def _make_room(self) -> bool:
        """Close the connection idle longest (not a subscriber, owed nothing); False if none."""
        idle = [c for c in self._clients.values() if not c.subscribed and not c.busy]
        if not idle:
            return False
        self._drop(min(idle, key=lambda c: c.active_at))
        return True

    def _arm_idle(self, client: _Client) -> None:
        if client.idle_timer is not None:
            client.idle_timer.cancel()
        client.idle_timer = self.loop.call_later(IDLE_SEC, lambda: self._on_idle(client))

    def _on_idle(self, client: _Client) -> None:
        client.idle_timer = None
        if client.subscribed or client.busy:
            self._arm_idle(client)
        else:
            self._drop(client)

    def _accept_failed(self, e: OSError) -> None:
        self._log.info("control", f"accept failed: {e.strerror}")

    def _read(self, client: _Client) -> None:
        data = received(client.sock, 65536)
        if data is None:
            return
        if not data:
            self._drop(client)
            return
        if client.subscribed:
            return  # the connection carries events only; the client's words are ignored
        client.inbuf += data
        self._process(client)

    def _process(self, client: _Client) -> None:
        """Answer the requests waiting in ``client.inbuf``, one at a time (see the module)."""
        client.more_timer = None
        if client.sock.fileno() < 0:
            return
        for _ in range(PER_TURN):
            if client.subscribed or client.busy or b"\n" not in client.inbuf:
                break
            line, client.inbuf = client.inbuf.split(b"\n", 1)
            client.active_at = self.loop.now()
            self._arm_idle(client)
            self._answer(client, line)
        else:
            if b"\n" in client.inbuf and not client.busy and client.more_timer is None:
                client.more_timer = self.loop.call_later(0, lambda: self._process(client))
        if client.subscribed:
            client.inbuf = b""
        elif b"\n" not in client.inbuf and len(client.inbuf) > MAX_LINE:
            self._reply(client, {"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
            self._drop(client)
        elif client.outbuf:
            pass  # waiting to write (_flush); reading resumes once all is sent
        elif client.waiting or len(client.inbuf) > MAX_LINE:
            # Read no more from it until it is owed nothing and what it sent is
            # answered: what it sends meanwhile stays in the kernel's buffer, not ours.
            self._wait_for(client, "none")
        else:
            self._wait_for(client, "read")

    def _answer(self, client: _Client, line: bytes) -> None:
        try:
            request = parse_request(line)
        except ProtocolError as e:
            self._reply(client, {"ok": False, "error": str(e)})
            return
        if request.cmd == "events":
            if len(self.subscribers) >= MAX_SUBSCRIBERS:
                self._reply(
                    client,
                    {"ok": False, "error": f"{MAX_SUBSCRIBERS} events streams are open already"},
                )
                return
            client.subscribed = True
            self.subscribers.append(client)
            self._reply(client, {"ok": True, "subscribed": True})
            return
        answered = False

        def reply(response: dict[str, Any]) -> None:
            # Commands that wait (start, stop) answer later; the client may be gone.
            nonlocal answered
            if is_progress(response):
                # A line before the answer (asked for by the client): still owed one.
                if not answered and client.sock.fileno() >= 0:
                    self._reply(client, response)
                return
            if not answered:
                answered = True
                client.waiting = False
                if client.sock.fileno() >= 0:
                    self._reply(client, response)

        client.waiting = True
        try:
            self._handler(request, reply)
        except Exception as e:  # a bug must cost one answer, not the supervisor
            self._log.info("control", f"internal error on {request.cmd}: {e!r}")
            reply({"ok": False, "error": f"internal error: {e}"})

    def _reply(self, client: _Client, response: dict[str, Any]) -> None:
        client.outbuf += encode(response)
        self._flush(client)

    def broadcast(self, message: dict[str, Any]) -> None:
        """Send one message (``{"event": ...}``) to every subscriber."""
        data = encode(message)
        for client in list(self.subscribers):
            client.outbuf += data
            self._flush(client)

    def _flush(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.outbuf)
            del client.outbuf[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(client)
            return
        if len(client.outbuf) > MAX_PENDING_OUT:
            if client.subscribed:
                self._log.info(
                    "control",
                    f"dropped an events subscriber: it left {len(client.outbuf)} bytes unread",
                )
            self._drop(client)
        elif client.outbuf:
            self._wait_for(client, "write")  # the rare slow reader
        elif client.waiting:
            self._wait_for(client, "none")
        else:
            self._wait_for(client, "read")
            # Requests it sent while it was owed an answer: their turn, in the next turn
            # of the loop (never nested in this answer).
            if b"\n" in client.inbuf and not client.subscribed and client.more_timer is None:
                client.more_timer = self.loop.call_later(0, lambda: self._process(client))

    def _drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if fd >= 0:
            self._wait_for(client, "none")
            self._clients.pop(fd, None)
        for timer in (client.idle_timer, client.more_timer):
            if timer is not None:
                timer.cancel()
        client.idle_timer = client.more_timer = None
        if client.subscribed:
            client.subscribed = False
            with contextlib.suppress(ValueError):
                self.subscribers.remove(client)
        client.sock.close()

    def _refuse(self, conn: socket.socket, error: str) -> None:
        """Send the error line, then wait (briefly, in the loop) for the peer to hang
        up, dropping what it sends: a Unix socket closed with unread input resets
        the connection, and the peer's recv() would fail with ECONNRESET instead of
        reading the line, if its request arrived after our answer."""
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            conn.send(encode({"ok": False, "error": error}))  # one short line: it fits
            conn.shutdown(socket.SHUT_WR)
        if _discard_input(conn) or len(self._refused) >= MAX_REFUSED:
            conn.close()
            return
        fd = conn.fileno()

        def end() -> None:
            entry = self._refused.pop(fd, None)
            if entry is not None:
                self.loop.remove_reader(fd)
                entry[1].cancel()
                entry[0].close()

        def readable() -> None:
            if _discard_input(conn):
                end()

        self._refused[fd] = (conn, self.loop.call_later(REFUSED_LINGER_SEC, end))
        self.loop.add_reader(fd, readable)

    def close(self) -> None:
        for fd in list(self._refused):
            conn, timer = self._refused.pop(fd)
            self.loop.remove_reader(fd)
            timer.cancel()
            conn.close()
        for client in list(self._clients.values()):
            self._drop(client)
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.path.unlink(missing_ok=True)
