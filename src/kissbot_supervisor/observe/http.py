"""``GET /metrics`` over HTTP, inside the event loop: a tiny HTTP/1.0 responder.

Not ``http.server``: it blocks in a thread per request and is heavy for the
resident daemon. This answers one request per connection and closes it
(HTTP/1.0 style): ``GET`` or ``HEAD /metrics`` gets the Prometheus text, any
other path 404, any other method 405, a malformed request 400, a request head
over ``MAX_REQUEST`` bytes 431. At most ``MAX_CLIENTS`` connections at once,
and one that has not sent its request within ``CLIENT_TIMEOUT`` seconds is
closed. When every slot is taken, the connection waiting longest for its
request makes room for the new one: slow clients (a slowloris) push each other
out, while a scraper, which sends its request at once, is answered. Reading,
writing and accepting never block the loop.

:func:`respond` (request head in, response bytes out) holds the protocol and
is tested on its own.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

from ..config.settings import is_loopback, split_listen
from ..runtime.fs import bind_unix
from ..runtime.loop import accepted, received
from .metrics import CONTENT_TYPE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..runtime.log import Log
    from ..runtime.loop import Loop, Timer

MAX_CLIENTS = 16
MAX_REQUEST = 8192
CLIENT_TIMEOUT = 10.0
PATH = "/metrics"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def _response(code: int, body: bytes, content_type: str, head_only: bool = False) -> bytes:
    headers = [
        f"HTTP/1.0 {code} {_REASONS[code]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if code == 405:
        headers.append("Allow: GET, HEAD")
    head = ("\r\n".join(headers) + "\r\n\r\n").encode("ascii")
    return head if head_only else head + body


def _plain(code: int, text: str) -> bytes:
    return _response(code, (text + "\n").encode(), "text/plain; charset=utf-8")


def request_complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole request head (its blank line)."""
    return b"\r\n\r\n" in data or b"\n\n" in data


def respond(head: bytes, metrics: Callable[[], str]) -> bytes:
    """The whole response to one request head (everything up to its blank line)."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        return _plain(400, "expected a request line like: GET /metrics HTTP/1.1")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return _plain(405, "only GET and HEAD are served")
    if target != PATH.encode():
        return _plain(404, f"not found; the metrics are at {PATH}")
    return _response(200, metrics().encode("utf-8"), CONTENT_TYPE, head_only=method == b"HEAD")


class _Conn:
    __slots__ = ("inbuf", "outbuf", "since", "sock", "timer")

    def __init__(self, sock: socket.socket, since: float) -> None:
        self.sock = sock
        self.since = since
        self.inbuf = b""
        self.outbuf = b""  # the response, once the request is complete
        self.timer: Timer | None = None


class MetricsHttpServer:
    """Listens on ``listen`` (``settings.split_listen`` syntax); raises OSError if it cannot."""

    def __init__(
        self,
        loop: Loop,
        listen: str,
        metrics: Callable[[], str],
        log: Log,
    ) -> None:
        self.loop = loop
        self.listen = listen
        self._metrics = metrics
        self._log = log
        self._conns: dict[int, _Conn] = {}
        family, host, port = split_listen(listen)
        self._unix_path = host if family == "unix" else None
        if family == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                self._bind_unix(host)
            except OSError:
                self.sock.close()
                raise
        else:
            af = socket.AF_INET6 if family == "inet6" else socket.AF_INET
            self.sock = socket.socket(af, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if af == socket.AF_INET6:
                    self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                self.sock.bind((host, port))
            except OSError:
                self.sock.close()
                raise
        self.sock.listen(MAX_CLIENTS)
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._accept)
        if not is_loopback(family, host):
            log.warning(
                "metrics",
                f"serving metrics on {listen}, which is not a loopback address: anyone who "
                "can reach it sees process names, states and figures (never tokens)",
            )

    @property
    def connections(self) -> int:
        return len(self._conns)

    def _bind_unix(self, path: str) -> None:
        # A socket file left by an earlier run is replaced; any other file is not ours.
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise OSError(f"{path} exists and is not a socket; refusing to replace it")
            os.unlink(path)
        # Metrics hold no secret; who may connect is decided by the directory.
        bind_unix(self.sock, Path(path), 0o666)

    def _accept(self) -> None:
        for conn in accepted(self.sock, self._accept_failed):
            if len(self._conns) >= MAX_CLIENTS:
                waiting = [c for c in self._conns.values() if not c.outbuf]
                if not waiting:
                    conn.close()
                    continue
                self._close(min(waiting, key=lambda c: c.since))
            conn.setblocking(False)
            c = _Conn(conn, self.loop.now())
            self._conns[conn.fileno()] = c
            self.loop.add_reader(conn.fileno(), lambda c=c: self._read(c))  # type: ignore[misc]
            c.timer = self.loop.call_later(CLIENT_TIMEOUT, lambda c=c: self._close(c))  # type: ignore[misc]

    def _accept_failed(self, e: OSError) -> None:
        self._log.warning("metrics", f"accept failed on {self.listen}: {e.strerror}")

    def _read(self, c: _Conn) -> None:
        data = received(c.sock, 4096)
        if data is None:
            return
        if not data:
            self._close(c)
            return
        c.inbuf += data
        if request_complete(c.inbuf):
            try:
                c.outbuf = respond(c.inbuf, self._metrics)
            except Exception as e:  # a bug costs one answer, not the supervisor
                self._log.error("metrics", f"internal error while serving {PATH}: {e!r}")
                c.outbuf = _plain(500, "internal error; see the supervisor log")
        elif len(c.inbuf) > MAX_REQUEST:
            c.outbuf = _plain(431, f"the request head is over {MAX_REQUEST} bytes")
        else:
            return
        fd = c.sock.fileno()
        self.loop.remove_reader(fd)
        self.loop.add_writer(fd, lambda: self._write(c))
        self._write(c)

    def _write(self, c: _Conn) -> None:
        try:
            sent = c.sock.send(c.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c)
            return
        c.outbuf = c.outbuf[sent:]
        if not c.outbuf:
            self._close(c)

    def _close(self, c: _Conn) -> None:
        fd = c.sock.fileno()
        if fd < 0:
            return
        if c.timer is not None:
            c.timer.cancel()
            c.timer = None
        self.loop.remove_reader(fd)
        self._conns.pop(fd, None)
        # Read what the client sent beyond its head: closing with unread data would
        # send a reset, which can make the client lose the response.
        with contextlib.suppress(OSError):
            c.sock.shutdown(socket.SHUT_WR)
            for _ in range(16):  # bounded: a client that keeps sending gets its reset
                if not c.sock.recv(65536):
                    break
        c.sock.close()

    def close(self) -> None:
        for c in list(self._conns.values()):
            self._close(c)
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self._unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._unix_path)
