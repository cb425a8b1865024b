"""The hub check a bot would make, as bytes: hello + ping out, pong back. Sans I/O.

The real hub binds its socket before its Twitch WebSocket is connected and,
with Twitch unreachable, accepts connections and answers nothing. A socket that
accepts is therefore no proof of a working hub; a ``pong`` is: the hub answers
a ``ping`` only after a ``hello`` on the same connection, from the loop that
serves the bots. :mod:`.readiness` does the I/O (non-blocking, on the
supervisor's loop); this module builds the request and judges the replies.

The probe registers as a bot of its own: channel ``kissbot-supervisor`` with a
channel id that is not a Twitch user id (those are digits), so it can never
replace a real bot's registration in the hub, and no topics, so it subscribes
to nothing. The connection is closed as soon as the pong comes.
"""

from __future__ import annotations

import json

PROBE_CHANNEL = "kissbot-supervisor"
PROBE_CHANNEL_ID = "kissbot-supervisor-probe"
# A hub that says nothing in a line this long is not speaking the protocol.
MAX_REPLY_LINE = 64 * 1024


def request(timestamp: int) -> bytes:
    """hello then ping, one JSON object a line, with exactly the keys the hub accepts
    (a message with any other key is dropped by it)."""
    hello = {
        "type": "hello",
        "channel": PROBE_CHANNEL,
        "channel_id": PROBE_CHANNEL_ID,
        "topics": [],
    }
    ping = {"type": "ping", "timestamp": timestamp}
    return b"".join(json.dumps(m, separators=(",", ":")).encode() + b"\n" for m in (hello, ping))


class Replies:
    """The hub's replies on one probe connection, fed as they come.

    :meth:`feed` returns True once the pong to our ping came. ``error`` holds the
    hub's last error reply in words (the hub answered, but refused the probe).
    """

    def __init__(self, timestamp: int) -> None:
        self.timestamp = timestamp
        self.error: str | None = None
        self._buffer = bytearray()

    def feed(self, data: bytes) -> bool:
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._judge(line):
                return True
        if len(self._buffer) > MAX_REPLY_LINE:
            self._buffer.clear()
            self.error = f"sent {MAX_REPLY_LINE} bytes without a newline"
        return False

    def _judge(self, line: bytes) -> bool:
        try:
            message = json.loads(line)
        except ValueError:
            return False  # not the protocol; the timeout says so if nothing else comes
        if not isinstance(message, dict):
            return False
        kind = message.get("type")
        if kind == "pong":
            # A pong with another timestamp is not ours (none other is due here).
            return message.get("timestamp") == self.timestamp
        if kind == "error":
            cmd, code, detail = (str(message.get(k, "")) for k in ("cmd", "code", "detail"))
            self.error = f"answered {cmd or 'the probe'} with error {code}: {detail}"[:300]
        return False
