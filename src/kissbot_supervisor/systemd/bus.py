"""A D-Bus connection inside our event loop: jeepney's parser and auth, our selector.

jeepney is sans-I/O at its core; its blocking and asyncio integrations do not
fit a ``selectors`` loop that must never block, so this is the thin third
integration: authenticate once (blocking, at start-up, via jeepney's own
``prep_socket``), then read whatever arrives when the socket is readable and
hand replies to the callbacks waiting for their serial, and signals to the
handlers whose match rule accepts them.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable

from jeepney import HeaderFields, Message, MessageType, Parser
from jeepney.bus import get_bus
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import prep_socket

from ..loop import Loop

TYPE_CHECKING = False
if TYPE_CHECKING:
    from jeepney import MatchRule

ReplyCallback = Callable[[Message], None]
SignalCallback = Callable[[Message], None]


class BusError(Exception):
    """The bus cannot be reached, or went away."""


class BusConnection:
    def __init__(self, loop: Loop, address: str, timeout: float = 5.0) -> None:
        self.loop = loop
        try:
            self.sock: socket.socket = prep_socket(get_bus(address), False, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as e:
            raise BusError(f"cannot connect to the system bus at {address}: {e}") from None
        self._parser = Parser()
        self._serials = itertools.count(1)
        self._waiting: dict[int, ReplyCallback] = {}
        self._signals: list[tuple[MatchRule, SignalCallback]] = []
        self.on_lost: Callable[[], None] | None = None
        hello = self.call_sync(message_bus.Hello(), timeout)
        if hello.header.message_type is MessageType.error:
            raise BusError(f"the system bus refused us: {hello.body}")
        self.unique_name = str(hello.body[0])
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._on_readable)

    # -- sending ------------------------------------------------------------

    def send(self, msg: Message, on_reply: ReplyCallback | None = None) -> int:
        serial = next(self._serials)
        if on_reply is not None:
            self._waiting[serial] = on_reply
        data = msg.serialise(serial=serial)
        # Messages to the manager are small: a blocking send of one is immediate,
        # and a bus that cannot take a few hundred bytes is a bus that is gone.
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        except OSError as e:
            self._waiting.pop(serial, None)
            raise BusError(f"the system bus went away: {e}") from None
        finally:
            self.sock.setblocking(False)
        return serial

    def call_sync(self, msg: Message, timeout: float = 5.0) -> Message:
        """Send and wait for the reply, error replies included (start-up only: it blocks)."""
        box: list[Message] = []
        self.send(msg, box.append)
        deadline = time.monotonic() + timeout
        self.sock.setblocking(True)
        try:
            while not box:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BusError(f"no answer from the bus within {timeout:g} s")
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    raise BusError("the system bus closed the connection")
                self._dispatch(data)
        finally:
            self.sock.setblocking(False)
        return box[0]

    def on_signal(self, rule: MatchRule, callback: SignalCallback) -> None:
        self._signals.append((rule, callback))

    # -- receiving ------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self.sock.fileno())
            if self.on_lost is not None:
                self.on_lost()
            return
        self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        for msg in self._parser.feed(data):
            kind = msg.header.message_type
            if kind in (MessageType.method_return, MessageType.error):
                serial = msg.header.fields.get(HeaderFields.reply_serial)
                callback = self._waiting.pop(serial, None) if serial is not None else None
                if callback is not None:
                    callback(msg)
            elif kind is MessageType.signal:
                for rule, handler in self._signals:
                    if rule.matches(msg):
                        handler(msg)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
