"""A blocking client for the control socket: connect, send requests, read answers.

Used by ``kissbotctl`` and its interactive shell. Every socket call of a
request runs under one deadline (``timeout`` seconds), so a stuck or
trickling supervisor can never hang the caller; only the lines of an
open-ended stream (``events``, :meth:`Client.read_stream_line`) are awaited
without a deadline. A command that waits for its outcome (``start``) and asks
for progress gets the supervisor's own word on how long it will wait: each
progress line moves the deadline to that, plus ``timeout`` for the answer to
travel. Failures raise
:class:`ControlError` whose message is one sentence fit for the user.

Imports only ``socket``, ``os``, ``errno`` and :mod:`.protocol` (itself only
``json``): ``kissbotctl`` must start fast.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from ..protocol import MAX_RESPONSE, PROGRESS, ProtocolError, encode, is_progress, parse_response

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: kissbotctl start-up cost
    from collections.abc import Callable, Mapping
    from types import TracebackType
    from typing import Any, Self

__all__ = ["Client", "ConnectError", "ControlError"]

DEFAULT_TIMEOUT = 10.0
TICK_SEC = 1.0  # while progress is shown, it is redrawn this often (the seconds count)
_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR})
_PERMISSION_HINT = (
    "you need to be root, the supervisor's user, or in its operators' group "
    "(control_group, kissbot-operators by default)"
)


class ControlError(Exception):
    """Talking to the supervisor failed; the message is one sentence for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectError(ControlError):
    """The supervisor could not be reached at all (no socket, refused, denied, timed out).

    ``os_errno`` is the errno of the failed ``connect`` (None for a timeout).
    """

    def __init__(self, message: str, os_errno: int | None = None) -> None:
        super().__init__(message)
        self.os_errno = os_errno

    @property
    def absent(self) -> bool:
        """True when no supervisor listens there at all (no socket file, or a stale one).

        Not for a refused permission or a timeout: a supervisor may well be
        running then, only not answering us.
        """
        return self.os_errno in _ABSENT_ERRNOS


def _describe_connect_failure(path: str, exc: OSError, timeout: float) -> str:
    if isinstance(exc, PermissionError):
        return f"permission denied on {path} ({_PERMISSION_HINT})"
    if isinstance(exc, TimeoutError):
        return f"no answer from the supervisor at {path} within {timeout:g} s"
    reason = exc.strerror or str(exc)
    if exc.errno in _ABSENT_ERRNOS:
        return f"no supervisor at {path} ({reason}); is kissbot-supervisor running?"
    return f"cannot reach the supervisor at {path} ({reason})"


class Client:
    """One connection to the control socket; several requests may share it.

    Use as a context manager, or call :meth:`connect` and :meth:`close`.
    :meth:`request` connects on first use.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Open the connection; a no-op when already open. Raises :class:`ConnectError`."""
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            message = _describe_connect_failure(self.path, exc, self.timeout)
            os_errno = None if isinstance(exc, TimeoutError) else exc.errno
            raise ConnectError(message, os_errno) from exc
        self._sock = sock
        self._buffer = bytearray()

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        sock, self._sock = self._sock, None
        self._buffer = bytearray()
        if sock is not None:
            sock.close()

    def request(
        self,
        obj: Mapping[str, Any],
        on_progress: Callable[[dict[str, Any] | None], None] | None = None,
    ) -> dict[str, Any]:
        """Send one request and return its response object, ``ok: false`` ones included.

        ``on_progress`` (for a request that asks for progress) gets each progress
        line's object as it comes, and None every :data:`TICK_SEC` in between.
        Raises :class:`ControlError` when the exchange fails (the connection is
        then closed) or the answer breaks the protocol.
        """
        self.connect()
        assert self._sock is not None
        deadline = time.monotonic() + self.timeout
        promised: float | None = None  # the supervisor's own word on its wait
        try:
            self._send(self._sock, encode(obj), deadline)
            while True:
                tick = None if on_progress is None or promised is None else TICK_SEC
                line = self._read_line(self._sock, deadline, tick, on_progress)
                response = parse_response(line, progress=on_progress is not None)
                if on_progress is None or not is_progress(response):
                    return response
                promised = float(response[PROGRESS]["wait_sec"])
                deadline = time.monotonic() + max(promised, 0.0) + self.timeout
                on_progress(response[PROGRESS])
        except ControlError:
            self.close()
            raise
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            raise ControlError("the supervisor closed the connection without an answer") from exc
        except TimeoutError as exc:
            self.close()
            if promised is not None:
                raise ControlError(
                    f"no answer from the supervisor at {self.path}: it said it would answer "
                    f"within {promised:g} s, and {self.timeout:g} s more have passed "
                    "(kissbotctl status shows where things stand)"
                ) from exc
            raise ControlError(
                f"no answer from the supervisor at {self.path} within {self.timeout:g} s"
            ) from exc
        except OSError as exc:
            self.close()
            reason = exc.strerror or str(exc)
            raise ControlError(
                f"talking to the supervisor at {self.path} failed ({reason})"
            ) from exc
        except ProtocolError as exc:
            self.close()
            raise ControlError(exc.message) from exc

    def read_stream_line(self) -> bytes | None:
        """The next line of an open-ended stream (``events``), waiting as long as it takes.

        Call after a :meth:`request` that subscribed. There is no overall
        deadline: a quiet supervisor is a quiet stream, not a failure. Returns
        None when the supervisor hangs up (it stopped). A Ctrl-C while waiting
        raises KeyboardInterrupt as usual.
        """
        sock = self._sock
        if sock is None:
            return None
        sock.settimeout(None)
        scanned = 0
        while True:
            line, scanned = self._take_line(scanned)
            if line is not None:
                return line
            if len(self._buffer) > MAX_RESPONSE:
                self.close()
                raise ControlError(
                    f"the supervisor sent a line longer than {MAX_RESPONSE} bytes; giving up"
                )
            try:
                chunk = sock.recv(256 * 1024)
            except ConnectionResetError:
                chunk = b""
            except OSError as exc:
                self.close()
                reason = exc.strerror or str(exc)
                raise ControlError(
                    f"reading from the supervisor at {self.path} failed ({reason})"
                ) from exc
            if not chunk:
                self.close()
                return None
            self._buffer += chunk

    def _remaining(self, sock: socket.socket, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)

    def _send(self, sock: socket.socket, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            self._remaining(sock, deadline)
            try:
                sent = sock.send(view)
            except (BrokenPipeError, ConnectionResetError):
                # A supervisor that refuses a client (not allowed by SO_PEERCRED)
                # answers and hangs up at once, maybe before our request is out:
                # its answer may still be waiting to be read, so read on.
                return
            view = view[sent:]

    def _take_line(self, scanned: int) -> tuple[bytes | None, int]:
        """The first whole line in the buffer (removed from it), or None and how far
        the buffer has been searched, so the next search starts there."""
        newline = self._buffer.find(b"\n", scanned)
        if newline < 0:
            return None, len(self._buffer)
        line = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        return line, 0

    def _read_line(
        self,
        sock: socket.socket,
        deadline: float,
        tick: float | None = None,
        on_tick: Callable[[None], None] | None = None,
    ) -> bytes:
        """The next line before ``deadline``; ``on_tick(None)`` every ``tick`` s meanwhile."""
        scanned = 0
        while True:
            line, scanned = self._take_line(scanned)
            if line is not None:
                return line
            if len(self._buffer) > MAX_RESPONSE:
                raise ControlError(
                    f"the supervisor's answer is longer than {MAX_RESPONSE} bytes; giving up"
                )
            self._remaining(sock, deadline)
            if tick is not None and on_tick is not None:
                sock.settimeout(max(0.001, min(tick, deadline - time.monotonic())))
                try:
                    chunk = sock.recv(256 * 1024)
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        raise
                    on_tick(None)
                    continue
            else:
                chunk = sock.recv(256 * 1024)
            if not chunk:
                raise ControlError("the supervisor closed the connection without an answer")
            self._buffer += chunk
