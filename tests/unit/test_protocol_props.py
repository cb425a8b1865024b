"""Property-based tests of the control protocol: any line is a Request or one ProtocolError.

``parse_request`` is what the daemon runs on every line a client sends; the
property is that it returns a valid :class:`Request` or raises
:class:`ProtocolError` with a one-line message, for any bytes at all, and
never anything else (the live socket is tested in
``tests/process/test_bad_input.py``).
"""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from kissbot_supervisor.protocol import (
    COMMANDS,
    MAX_LINE,
    MAX_NAMES,
    NAMED_COMMANDS,
    ProtocolError,
    Request,
    encode,
    parse_request,
    parse_response,
)


def outcome(line: bytes) -> Request | ProtocolError:
    """parse_request's answer; any other exception fails the test."""
    try:
        request: Request | ProtocolError = parse_request(line)
    except ProtocolError as e:
        request = e
    if isinstance(request, ProtocolError):
        message = str(request)
        assert message == request.message
        assert message
        assert "\n" not in message, message[:200]
        assert "\r" not in message, message[:200]
        return request
    check_request(request)
    return request


def check_request(request: Request) -> None:
    """A Request is only ever a valid one."""
    assert request.cmd in COMMANDS
    if request.cmd in NAMED_COMMANDS:
        assert 1 <= len(request.names) <= MAX_NAMES
        assert all(isinstance(n, str) and n for n in request.names)
    else:
        assert request.names == ()
    assert parse_request(encode(request.to_obj())) == request  # it round-trips


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from([*COMMANDS, "hub", "all", "el_serda", "", "STATUS", "status "])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["cmd", "names"]), inner, max_size=4
        )
    ),
    max_leaves=15,
)
# Objects near the valid ones: the real keys with any values, sometimes one more key.
request_like = st.fixed_dictionaries(
    {},
    optional={
        "cmd": st.sampled_from(COMMANDS) | json_values,
        "names": st.lists(st.sampled_from(["hub", "all", "el_serda"]) | json_values, max_size=4)
        | json_values,
        "extra": json_values,
    },
)


@given(st.binary(max_size=512))
@example(b"\xff\xfe\x00{")
@example(b'{"cmd":"status"}\x00')
@example(b'{"cmd":"st\xc3atus"}')
@example(b"\xef\xbb\xbf" + b'{"cmd":"status"}')  # a UTF-8 byte order mark
@example(b'{"cmd":"status"}\n{"cmd":"reload"}')
@example(b'{"cmd":"status","cmd":"reload"}')
@example(b'{"cmd":"\\ud800"}')
@example(b"NaN")
def test_any_bytes_are_a_request_or_a_protocol_error(line: bytes) -> None:
    outcome(line)


def is_valid(value: object) -> bool:
    """The rule book, written out independently of protocol.py."""
    if not isinstance(value, dict) or not set(value) <= {"cmd", "names"}:
        return False
    cmd = value.get("cmd")
    if cmd not in COMMANDS:
        return False
    if cmd not in NAMED_COMMANDS:
        return "names" not in value
    names = value.get("names")
    return (
        isinstance(names, list)
        and 1 <= len(names) <= MAX_NAMES
        and all(isinstance(n, str) and n for n in names)
    )


@given(request_like | json_values)
def test_any_json_value_is_a_request_or_a_protocol_error(value: object) -> None:
    result = outcome(json.dumps(value).encode())
    assert isinstance(result, Request) == is_valid(value), (value, result)
    if isinstance(result, Request):
        assert isinstance(value, dict)
        assert result.to_obj() == {k: value[k] for k in ("cmd", "names") if k in value}


@given(
    st.sampled_from([b'{"cmd":"status"}', b'{"cmd":"start","names":["el_serda","hub"]}']),
    st.data(),
)
def test_mangled_valid_lines_are_a_request_or_a_protocol_error(
    base: bytes, data: st.DataObject
) -> None:
    """Truncated, with a byte flipped, inserted or dropped: as a client's bug would send."""
    cut = data.draw(st.integers(0, len(base)))
    where = data.draw(st.integers(0, len(base) - 1))
    byte = data.draw(st.integers(0, 255))
    for line in (
        base[:cut],
        base[:where] + bytes([byte]) + base[where + 1 :],
        base[:where] + bytes([byte]) + base[where:],
        base[:where] + base[where + 1 :],
    ):
        outcome(line)


@given(
    st.integers(MAX_LINE + 1, MAX_LINE + 4096),
    st.sampled_from([b" ", b"[", b"\xff", b"a"]),
)
def test_lines_over_max_line_are_refused_whatever_they_hold(length: int, filler: bytes) -> None:
    line = b'{"cmd":"status","names":"' + filler * length
    result = outcome(line[:length])
    assert isinstance(result, ProtocolError)
    assert f"the limit is {MAX_LINE} bytes per line" in str(result)


@given(
    st.integers(1, 200_000),
    st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'{"cmd":"start","names":[', b"]}")]),
    st.booleans(),
)
@example(1_000_000, (b"[", b"]"), True)
def test_nesting_bombs_are_refused(depth: int, brackets: tuple[bytes, bytes], closed: bool) -> None:
    opening, closing = brackets
    line = opening * depth + (closing * depth if closed else b"")
    result = outcome(line)
    if len(line) > MAX_LINE or depth > 1:
        assert isinstance(result, ProtocolError)


@given(st.lists(st.text(max_size=10), max_size=MAX_NAMES + 5), st.sampled_from(NAMED_COMMANDS))
def test_names_lists_of_any_length_and_content(names: list[str], cmd: str) -> None:
    result = outcome(json.dumps({"cmd": cmd, "names": names}).encode())
    ok = 1 <= len(names) <= MAX_NAMES and all(names)
    assert isinstance(result, Request) == ok


@given(st.binary(max_size=256))
def test_parse_response_on_any_bytes_returns_an_object_or_a_protocol_error(line: bytes) -> None:
    """The client's side of the same rule: a garbled answer is one clear error."""
    try:
        response: dict[str, object] | ProtocolError = parse_response(line)
    except ProtocolError as e:
        response = e
    if isinstance(response, ProtocolError):
        assert "\n" not in str(response)
    else:
        assert isinstance(response["ok"], bool)
