"""A D-Bus connection inside our event loop: jeepney's parser and auth, our selector.

jeepney is sans-I/O at its core; its blocking and asyncio integrations do not
fit a ``selectors`` loop that must never block, so this is the thin third
integration: authenticate once (blocking, at start-up, via jeepney's own
``prep_socket``), then read whatever arrives when the socket is readable and
hand replies to the callbacks waiting for their serial, and signals to the
handlers whose match rule accepts them.

The bus daemon refuses a method call once the caller has
``max_replies_per_connection`` calls awaiting their replies (128 on a stock
system bus) with ``org.freedesktop.DBus.Error.LimitsExceeded``, and does not
pass it on. A fleet of a few hundred units sends more than that in one go (one
start or stop per unit), so calls beyond :data:`MAX_IN_FLIGHT` wait here in
order and go out as replies come back; a bus configured lower still is learnt
from its first refusal, and the refused call is sent again.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections import deque
from collections.abc import Callable

from jeepney import HeaderFields, Message, MessageType, Parser
from jeepney.bus import get_bus
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import prep_socket

from ...runtime.loop import Loop
from .messages import ERROR_LIMITS_EXCEEDED, MAX_IN_FLIGHT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from jeepney import MatchRule

ReplyCallback = Callable[[Message], None]
SignalCallback = Callable[[Message], None]
_Call = tuple[int, bytes, ReplyCallback]  # serial, the message as sent, who gets the reply


def _ignore(_reply: Message) -> None:
    pass


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
        # Every call sent and not answered yet (the bus counts them all against us),
        # kept with its bytes so that a call the bus refused can be sent again. Calls
        # are kept serialised, not as Message objects: a start's unit properties are
        # a few KB on the wire but ten times that as Python objects, and a 300-unit
        # start queues hundreds of them (the heap they grew would stay after).
        self._waiting: dict[int, _Call] = {}
        self._queue: deque[_Call] = deque()
        self.window = MAX_IN_FLIGHT
        self._signals: list[tuple[MatchRule, SignalCallback]] = []
        self.on_lost: Callable[[], None] | None = None
        hello = self.call_sync(message_bus.Hello(), timeout)
        if hello.header.message_type is MessageType.error:
            raise BusError(f"the system bus refused us: {hello.body}")
        self.unique_name = str(hello.body[0])
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._on_readable)

    # -- sending ------------------------------------------------------------

    def send(self, msg: Message, on_reply: ReplyCallback | None = None) -> None:
        """Send a method call now, or once fewer than ``window`` calls await replies.

        Calls go out in the order they were made. ``on_reply`` gets the reply,
        error replies included.
        """
        serial = next(self._serials)
        self._queue.append((serial, msg.serialise(serial=serial), on_reply or _ignore))
        self._pump()

    @property
    def pending(self) -> int:
        """Calls not answered yet: sent, or waiting for room to be sent."""
        return len(self._waiting) + len(self._queue)

    def _pump(self) -> None:
        while self._queue and len(self._waiting) < self.window:
            self._transmit(self._queue.popleft())

    def _transmit(self, call: _Call) -> None:
        serial, data, _on_reply = call
        self._waiting[serial] = call
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

    def drain(self, timeout: float) -> bool:
        """Block until every call has been sent and answered, or ``timeout`` runs out.

        For the exit: a call still queued (a StopUnit that cancels a pending
        auto-restart) would otherwise be lost with the process. True if drained.
        """
        deadline = time.monotonic() + timeout
        self.sock.setblocking(True)
        try:
            while self._waiting or self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(1 << 20)
                except TimeoutError:
                    continue
                if not data:
                    return False
                self._dispatch(data)
        except OSError:
            return False
        finally:
            self.sock.setblocking(False)
        return True

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
                call = self._waiting.pop(serial, None) if serial is not None else None
                if call is None:
                    continue
                if self._refused_for_limits(msg, call):
                    continue
                self._pump()
                call[2](msg)
            elif kind is MessageType.signal:
                for rule, handler in self._signals:
                    if rule.matches(msg):
                        handler(msg)

    def _refused_for_limits(self, msg: Message, call: _Call) -> bool:
        """The bus's limit is below our window: learn it, and send the call again later."""
        if msg.header.message_type is not MessageType.error:
            return False
        if msg.header.fields.get(HeaderFields.error_name) != ERROR_LIMITS_EXCEEDED:
            return False
        if not self._waiting:
            return False  # refused with nothing else in flight: no later reply to wait for
        # The calls still in flight are what the bus let through: keep below that.
        self.window = min(self.window, len(self._waiting))
        # Sent again as it was, serial included: the refusal was that serial's reply.
        self._queue.appendleft(call)
        return True

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
