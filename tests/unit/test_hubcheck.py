"""The hub probe's bytes: what a bot would send, and which replies prove a working hub."""

from __future__ import annotations

import json

from kissbot_supervisor.kissbot import hubcheck


def test_the_request_is_hello_then_ping_with_only_the_keys_the_hub_accepts() -> None:
    lines = hubcheck.request(1234).splitlines()
    hello, ping = (json.loads(line) for line in lines)
    assert hello == {
        "type": "hello",
        "channel": hubcheck.PROBE_CHANNEL,
        "channel_id": hubcheck.PROBE_CHANNEL_ID,
        "topics": [],
    }
    assert ping == {"type": "ping", "timestamp": 1234}
    # Never a Twitch user id (digits): the probe cannot replace a real bot's registration.
    assert not hubcheck.PROBE_CHANNEL_ID.isdigit()


def test_only_the_pong_to_our_ping_proves_the_hub_serves() -> None:
    replies = hubcheck.Replies(77)
    assert not replies.feed(
        b'{"type":"ack","cmd":"hello","channel_id":"x","topic":"","status":"ok"}\n'
    )
    assert not replies.feed(b'{"type":"pong","timestamp":76}\n')  # not ours
    assert not replies.feed(b"not json\n[1]\n")
    # A pong split across reads counts once its line is complete.
    assert not replies.feed(b'{"type":"pong",')
    assert replies.feed(b'"timestamp":77}\n')
    assert replies.error is None


def test_an_error_reply_is_kept_in_words() -> None:
    replies = hubcheck.Replies(1)
    line = {"type": "error", "cmd": "hello", "code": "bad_request", "detail": "no topics"}
    assert not replies.feed(json.dumps(line).encode() + b"\n")
    assert replies.error == "answered hello with error bad_request: no topics"


def test_a_reply_without_newlines_is_not_buffered_for_ever() -> None:
    replies = hubcheck.Replies(1)
    assert not replies.feed(b"x" * (hubcheck.MAX_REPLY_LINE + 1))
    assert replies.error is not None
    assert "without a newline" in replies.error
