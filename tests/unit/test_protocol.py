"""The control protocol (pure) and the control socket's default path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kissbot_supervisor.config.paths import (
    SYSTEM_RUNTIME_DIR,
    default_control_socket,
    default_runtime_dir,
    fstype_of,
    instance_name,
    instance_runtime_dir,
    is_tmpfs,
)
from kissbot_supervisor.kissbot.names import unknown_names_text
from kissbot_supervisor.protocol import (
    MAX_LINE,
    MAX_NAMES,
    ProtocolError,
    Request,
    UnknownNameError,
    build_request,
    encode,
    error_response,
    is_progress,
    parse_request,
    parse_response,
    progress_message,
)
from kissbot_supervisor.status import exit_code_for_status, filter_status

# --- parse_request: valid input ----------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"cmd":"status"}\n', Request("status")),
        (b'{"cmd":"reload"}', Request("reload")),
        (
            b'{"cmd": "start", "names": ["el_serda", "hub"]}\r\n',
            Request("start", ["el_serda", "hub"]),
        ),
        (b'{"names":["all"],"cmd":"stop"}\n', Request("stop", ("all",))),
        ('{"cmd":"restart","names":["émile"]}\n'.encode(), Request("restart", ["émile"])),
    ],
)
def test_parse_request_accepts_valid_lines(line: bytes, expected: Request) -> None:
    assert parse_request(line) == expected


def test_request_is_immutable_and_round_trips() -> None:
    request = Request("start", ["a_bot"])
    with pytest.raises(AttributeError):
        request.cmd = "stop"
    assert parse_request(encode(request.to_obj())) == request
    assert hash(request) == hash(Request("start", ("a_bot",)))
    assert request != Request("stop", ["a_bot"])


def test_line_of_exactly_max_line_bytes_is_accepted() -> None:
    skeleton = b'{"cmd":"start","names":[""]}\n'
    name = "x" * (MAX_LINE - len(skeleton))
    line = b'{"cmd":"start","names":["' + name.encode() + b'"]}\n'
    assert len(line) == MAX_LINE
    assert parse_request(line).names == (name,)


# --- parse_request: every class of malformed input --------------------------


def _error(line: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        parse_request(line)
    assert info.value.message == str(info.value)
    return info.value.message


def test_non_utf8_is_rejected_with_the_offending_byte() -> None:
    message = _error(b'{"cmd":"st\xffatus"}\n')
    assert "not valid UTF-8" in message
    assert "0xff" in message
    assert "offset 10" in message


def test_line_over_max_line_is_rejected_before_decoding() -> None:
    line = b'{"cmd":"status"}' + b" " * MAX_LINE + b"\xff\n"
    message = _error(line)
    assert str(len(line)) in message
    assert f"limit is {MAX_LINE} bytes" in message


@pytest.mark.parametrize("line", [b"{cmd: status}\n", b'{"cmd":"status"\n', b"status\n", b"{}{}"])
def test_bad_json_is_rejected(line: bytes) -> None:
    message = _error(line)
    assert "not valid JSON" in message
    assert "one object" in message


@pytest.mark.parametrize("line", [b"\n", b"", b"   \r\n"])
def test_empty_line_is_rejected(line: bytes) -> None:
    assert "empty" in _error(line)


def test_deeply_nested_json_is_rejected_not_crashed() -> None:
    depth = 30000
    line = b"[" * depth + b"]" * depth
    assert len(line) <= MAX_LINE
    message = _error(line)
    assert "nested" in message or "not valid JSON" in message


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b'["status"]', "a list"),
        (b'"status"', "a string"),
        (b"42", "a number"),
        (b"null", "null"),
        (b"true", "a boolean"),
    ],
)
def test_non_object_is_rejected(line: bytes, kind: str) -> None:
    message = _error(line)
    assert "must be a JSON object" in message
    assert kind in message


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b"{}", 'no "cmd"'),
        (b'{"cmd": 3}', '"cmd" must be a string'),
        (b'{"cmd": null}', "got null"),
        (b'{"cmd": "kill"}', "unknown command 'kill'"),
        (b'{"cmd": "STATUS"}', "unknown command 'STATUS'"),
        (b'{"cmd": "status", "verbose": true}', "unknown key 'verbose'"),
        (b'{"cmd": "status", "names": ["a"]}', "'status' takes no \"names\""),
        (b'{"cmd": "reload", "names": []}', "'reload' takes no \"names\""),
    ],
)
def test_bad_cmd_or_keys_are_rejected(line: bytes, fragment: str) -> None:
    message = _error(line)
    assert fragment in message
    if "cmd" in fragment or "command" in fragment:
        assert "status, start, stop, restart, reload" in message


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b'{"cmd": "start"}', "'start' needs \"names\""),
        (b'{"cmd": "stop", "names": "el_serda"}', '"names" must be a list'),
        (b'{"cmd": "stop", "names": {"el_serda": 1}}', "got an object"),
        (b'{"cmd": "restart", "names": null}', "got null"),
        (b'{"cmd": "start", "names": []}', '"names" is empty'),
        (b'{"cmd": "start", "names": ["ok_name", 7]}', '"names"[1] must be a non-empty string'),
        (b'{"cmd": "start", "names": [""]}', "got an empty string"),
        (b'{"cmd": "start", "names": [["nested"]]}', "got a list"),
    ],
)
def test_bad_names_are_rejected(line: bytes, fragment: str) -> None:
    assert fragment in _error(line)


def test_too_many_names_are_rejected_and_the_limit_is_accepted() -> None:
    names = [f"bot_{i}" for i in range(MAX_NAMES)]
    assert len(parse_request(encode({"cmd": "stop", "names": names})).names) == MAX_NAMES
    message = _error(encode({"cmd": "stop", "names": [*names, "one_more"]}))
    assert f"{MAX_NAMES + 1} entries" in message
    assert f"at most {MAX_NAMES}" in message


# --- building and encoding --------------------------------------------------


def test_build_request_uses_the_same_rules() -> None:
    assert build_request("status") == {"cmd": "status"}
    assert build_request("start", ["a", "b"]) == {"cmd": "start", "names": ["a", "b"]}
    with pytest.raises(ProtocolError, match="needs at least one name"):
        build_request("stop", [])
    with pytest.raises(ProtocolError, match="takes no"):
        build_request("reload", ["a"])
    with pytest.raises(ProtocolError, match="unknown command"):
        build_request("frobnicate")


def test_encode_is_compact_utf8_json_with_one_newline() -> None:
    data = encode({"ok": True, "name": "émile", "n": [1, 2]})
    assert data == '{"ok":true,"name":"émile","n":[1,2]}\n'.encode()
    assert data.count(b"\n") == 1


def test_parse_response() -> None:
    assert parse_response(b'{"ok":true,"status":{}}') == {"ok": True, "status": {}}
    assert parse_response(encode(error_response("no such channel"))) == {
        "ok": False,
        "error": "no such channel",
    }
    for bad, fragment in [
        (b"nope", "not valid JSON"),
        (b"[1]", "a list, not a JSON object"),
        (b'{"status":{}}', 'no boolean "ok"'),
        (b'{"ok":"yes"}', 'no boolean "ok"'),
        (b'{"ok":false}', 'no "error"'),
        (b"\xfe", "not valid UTF-8"),
    ]:
        with pytest.raises(ProtocolError, match=fragment):
            parse_response(bad)


def test_progress_is_asked_for_by_named_commands_only() -> None:
    line = b'{"cmd":"restart","names":["a_bot"],"progress":true}'
    assert parse_request(line) == Request("restart", ["a_bot"], progress=True)
    assert parse_request(line).progress is True
    assert parse_request(b'{"cmd":"restart","names":["a_bot"]}').progress is False
    assert build_request("stop", ["a_bot"], progress=True) == {
        "cmd": "stop",
        "names": ["a_bot"],
        "progress": True,
    }
    assert build_request("stop", ["a_bot"]) == {"cmd": "stop", "names": ["a_bot"]}
    with pytest.raises(ProtocolError, match='"progress" must be true or false; got a string'):
        parse_request(b'{"cmd":"start","names":["a_bot"],"progress":"yes"}')
    with pytest.raises(ProtocolError, match="'status' takes no \"progress\""):
        parse_request(b'{"cmd":"status","progress":true}')


def test_rolling_is_a_restart_only_whole_number_of_bots() -> None:
    line = b'{"cmd":"restart","names":["all"],"progress":true,"rolling":5}'
    assert parse_request(line) == Request("restart", ["all"], progress=True, rolling=5)
    assert parse_request(b'{"cmd":"restart","names":["a_bot"]}').rolling == 0
    assert build_request("restart", ["all"], progress=True, rolling=2) == {
        "cmd": "restart",
        "names": ["all"],
        "progress": True,
        "rolling": 2,
    }
    assert "rolling" not in build_request("restart", ["all"])
    for bad, shown in (("0", "0"), ("-1", "-1"), ("1.5", "a number"), ("true", "a boolean")):
        with pytest.raises(
            ProtocolError, match=f"must be a whole number of bots, 1 or more; got {shown}"
        ):
            parse_request(b'{"cmd":"restart","names":["a_bot"],"rolling":' + bad.encode() + b"}")
    with pytest.raises(ProtocolError, match="'stop' takes no \"rolling\" \\(only restart"):
        build_request("stop", ["a_bot"], rolling=2)
    with pytest.raises(ProtocolError, match="'status' takes no \"rolling\""):
        parse_request(b'{"cmd":"status","rolling":2}')


def test_progress_lines_come_back_only_when_asked_for() -> None:
    line = encode(progress_message(64.5, ["slow_bot"], [{"name": "quick_bot", "ok": True}]))
    got = parse_response(line, progress=True)
    assert is_progress(got)
    assert got["progress"] == {
        "wait_sec": 64.5,
        "waiting": ["slow_bot"],
        "done": [{"name": "quick_bot", "ok": True}],
    }
    answer = parse_response(b'{"ok":true,"results":[]}', progress=True)
    assert not is_progress(answer)
    # A client that did not ask takes such a line for a broken answer.
    with pytest.raises(ProtocolError, match='no boolean "ok"'):
        parse_response(line)
    for bad in (b'{"progress":1}', b'{"progress":{"wait_sec":"x","waiting":[],"done":[]}}'):
        with pytest.raises(ProtocolError, match="progress line without a number wait_sec"):
            parse_response(bad, progress=True)


# --- STATUS objects -----------------------------------------------------------


def _proc(name: str, state: str, want: bool) -> dict[str, Any]:
    return {"name": name, "channel": name, "state": state, "want": want}


def _status(hub: dict[str, Any] | None, *bots: dict[str, Any]) -> dict[str, Any]:
    return {"backend": "native", "supervisor": {"pid": 1}, "hub": hub, "bots": list(bots)}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (_status(None), 0),
        (_status(None, _proc("a_bot", "running", True)), 0),
        (_status(None, _proc("a_bot", "running", True), _proc("b_bot", "stopped", False)), 0),
        (_status(None, _proc("a_bot", "running", True), _proc("b_bot", "failed", True)), 3),
        (_status(None, _proc("a_bot", "starting", True)), 3),
        (_status(None, _proc("a_bot", "backoff", True)), 3),
        (_status(_proc("hub", "running", True), _proc("a_bot", "running", True)), 0),
        (_status(_proc("hub", "failed", True), _proc("a_bot", "running", True)), 3),
        (_status(_proc("hub", "stopped", False)), 0),
        ({"bots": [_proc("a_bot", "stopped", True)]}, 3),
        ({}, 0),
    ],
)
def test_exit_code_for_status(status: dict[str, Any], code: int) -> None:
    assert exit_code_for_status(status) == code


def test_filter_status() -> None:
    status = _status(
        _proc("hub", "running", True),
        _proc("el_serda", "running", True),
        _proc("morthy", "failed", True),
    )
    assert filter_status(status, []) == status
    assert filter_status(status, ["all"]) == status
    assert filter_status(status, ["ALL", "morthy"]) == status

    only_serda = filter_status(status, ["El_Serda"])
    assert [b["channel"] for b in only_serda["bots"]] == ["el_serda"]
    assert "hub" not in only_serda  # not asked for, rather than "disabled"
    assert only_serda["supervisor"] == status["supervisor"]
    assert exit_code_for_status(only_serda) == 0
    assert exit_code_for_status(filter_status(status, ["morthy"])) == 3

    only_hub = filter_status(status, ["hub"])
    assert "bots" not in only_hub  # not asked for, rather than "no bots"
    assert only_hub["hub"] == status["hub"]
    assert filter_status(_status(None), ["hub"])["hub"] is None

    assert len(status["bots"]) == 2  # the input is left alone
    assert "hub" in status

    with pytest.raises(UnknownNameError) as info:
        filter_status(status, ["el_serda", "nobody", "ghost"])
    assert info.value.unknown == ("nobody", "ghost")
    assert str(info.value) == "unknown channels 'nobody', 'ghost' (known: el_serda, morthy)"


def test_names_are_matched_case_insensitively_as_twitch_does() -> None:
    assert Request("start", ["El_Serda", "HUB", "All"]).names == ("el_serda", "hub", "all")
    assert parse_request(b'{"cmd":"stop","names":["MORTHY"]}').names == ("morthy",)
    # Only ASCII is folded: KELVIN SIGN lowercases to "k" and must not become a login.
    assert Request("stop", ["\u212aissbot"]).names == ("\u212aissbot",)
    status = _status(None, _proc("el_serda", "running", True))
    assert [b["channel"] for b in filter_status(status, ["EL_SERDA"])["bots"]] == ["el_serda"]


def test_a_typo_gets_the_closest_names_not_the_whole_fleet() -> None:
    fleet = [f"streamer_{i:03}" for i in range(300)] + ["el_serda"]
    status = _status(None, *(_proc(n, "running", True) for n in fleet))
    with pytest.raises(UnknownNameError) as info:
        filter_status(status, ["el_sreda"])
    assert str(info.value) == "unknown channel 'el_sreda' (did you mean el_serda?)"
    with pytest.raises(UnknownNameError) as info:
        filter_status(status, ["zzzz_qqqq"])
    text = str(info.value)
    assert text == (
        "unknown channel 'zzzz_qqqq': no close name among the 301 channels "
        "(kissbotctl status lists them)"
    )
    assert "streamer_000" not in text


def test_unknown_names_text() -> None:
    assert unknown_names_text(["hub"], ["el_serda"]) == (
        "unknown channel 'hub' (this fleet runs no hub)"
    )
    assert unknown_names_text(["El_Sreda"], ["el_serda", "hub"]) == (
        "unknown channel 'El_Sreda' (did you mean el_serda?)"
    )
    assert unknown_names_text(["ghost"], ["el_serda", "hub"]) == (
        "unknown channel 'ghost' (known: el_serda)"
    )


# --- paths: where the control socket lives (shared by the daemon and kissbotctl) ---

MOUNTINFO_RUN_TMPFS = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
24 22 0:22 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=1000k,mode=755
25 24 0:23 / /run/user/1000 rw,nosuid,nodev,relatime shared:6 - tmpfs tmpfs rw,mode=700
26 22 0:24 / /running rw,relatime shared:7 - ext4 /dev/sdb1 rw
27 22 0:25 / /mnt/with\\040space rw,relatime - tmpfs tmpfs rw
"""
MOUNTINFO_RUN_ON_ROOT = """\
22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/a
25 22 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
"""


def test_fstype_of_picks_the_longest_mount_point() -> None:
    assert fstype_of("/run", MOUNTINFO_RUN_TMPFS) == "tmpfs"
    assert fstype_of("/run/kissbot-supervisor", MOUNTINFO_RUN_TMPFS) == "tmpfs"
    assert fstype_of("/running/x", MOUNTINFO_RUN_TMPFS) == "ext4"
    assert fstype_of("/var/run2", MOUNTINFO_RUN_TMPFS) == "ext4"
    assert fstype_of("/mnt/with space/x", MOUNTINFO_RUN_TMPFS) == "tmpfs"
    assert fstype_of("/run", MOUNTINFO_RUN_ON_ROOT) == "overlay"
    assert fstype_of("/run", "garbage line\n") is None


def test_fstype_of_later_mount_on_same_point_wins() -> None:
    stacked = MOUNTINFO_RUN_TMPFS + "40 24 0:30 / /run rw - ext4 /dev/sdc1 rw\n"
    assert fstype_of("/run/x", stacked) == "ext4"


def test_is_tmpfs_reads_the_real_mountinfo() -> None:
    real = Path("/proc/self/mountinfo").read_text()
    assert is_tmpfs("/proc") is False
    assert is_tmpfs("/dev/shm") == (fstype_of("/dev/shm", real) == "tmpfs")
    assert is_tmpfs("/run", mountinfo=MOUNTINFO_RUN_TMPFS) is True
    assert is_tmpfs("/run", mountinfo=MOUNTINFO_RUN_ON_ROOT) is False


@pytest.mark.parametrize(
    ("env", "uid", "mountinfo", "expected"),
    [
        ({"RUNTIME_DIRECTORY": "/run/custom"}, 0, MOUNTINFO_RUN_TMPFS, "/run/custom"),
        ({"RUNTIME_DIRECTORY": "/run/one:/run/two"}, 1000, "", "/run/one"),
        ({}, 0, MOUNTINFO_RUN_TMPFS, str(SYSTEM_RUNTIME_DIR)),
        ({"XDG_RUNTIME_DIR": "/run/user/0"}, 0, MOUNTINFO_RUN_TMPFS, str(SYSTEM_RUNTIME_DIR)),
        (
            {"XDG_RUNTIME_DIR": "/run/user/0"},
            0,
            MOUNTINFO_RUN_ON_ROOT,
            "/run/user/0/kissbot-supervisor",
        ),
        (
            {"XDG_RUNTIME_DIR": "/run/user/1000"},
            1000,
            MOUNTINFO_RUN_TMPFS,
            "/run/user/1000/kissbot-supervisor",
        ),
        ({}, 1000, MOUNTINFO_RUN_TMPFS, "/dev/shm/kissbot-supervisor-1000"),
        ({}, 0, MOUNTINFO_RUN_ON_ROOT, "/dev/shm/kissbot-supervisor-0"),
        ({"RUNTIME_DIRECTORY": "", "XDG_RUNTIME_DIR": ""}, 7, "", "/dev/shm/kissbot-supervisor-7"),
    ],
)
def test_default_runtime_dir(env: dict[str, str], uid: int, mountinfo: str, expected: str) -> None:
    assert default_runtime_dir(env, uid, mountinfo=mountinfo) == Path(expected)


def test_default_control_socket() -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_control_socket(env, 1000) == Path(
        "/run/user/1000/kissbot-supervisor/control.sock"
    )
    env["KISSBOT_CONTROL_SOCKET"] = "/srv/kb/ctl.sock"
    assert default_control_socket(env, 1000) == Path("/srv/kb/ctl.sock")


def test_each_workdir_has_its_own_runtime_dir_but_a_service_keeps_systemds() -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    first = instance_runtime_dir(Path("/home/ops/kissbot"), env, 1000)
    second = instance_runtime_dir(Path("/srv/kissbot"), env, 1000)
    assert first.parent == second.parent == Path("/run/user/1000/kissbot-supervisor")
    assert first.name.startswith("kissbot-")  # readable in ls
    assert first != second  # two checkouts named alike differ
    assert first == instance_runtime_dir(Path("/home/ops/kissbot"), env, 1000)  # stable
    assert instance_name(Path("/srv/Kiss bot")).startswith("Kiss_bot-")  # a plain file name
    assert len(instance_name(Path("/" + "x" * 300))) == 32 + 9
    # One service, one supervisor: systemd's RuntimeDirectory= as it is.
    service = {"RUNTIME_DIRECTORY": "/run/kissbot-supervisor"}
    assert instance_runtime_dir(Path("/srv/kissbot"), service, 0) == Path("/run/kissbot-supervisor")


def test_encode_of_a_status_is_one_line_json() -> None:
    status = _status(_proc("hub", "running", True), _proc("a_bot", "stopped", False))
    line = encode({"ok": True, "status": status})
    assert line.endswith(b"\n")
    assert b"\n" not in line[:-1]
    assert json.loads(line) == {"ok": True, "status": status}


# --- events stream lines -------------------------------------------------------


def test_parse_event_returns_the_event_object() -> None:
    from kissbot_supervisor.protocol import EVENT_KEYS, parse_event

    event = dict.fromkeys(EVENT_KEYS)
    event.update(time=1.5, name="el_serda", kind="ready", message="ready", state="running")
    assert parse_event(encode({"event": event})) == event


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"ok": true, "subscribed": true}',
        b'{"event": {"time": 1, "name": "x"}}',
        b'{"event": "ready"}',
    ],
)
def test_parse_event_rejects_lines_that_are_not_events(line: bytes) -> None:
    from kissbot_supervisor.protocol import parse_event

    with pytest.raises(ProtocolError):
        parse_event(line)


def test_parse_event_raises_the_supervisors_error_text() -> None:
    from kissbot_supervisor.protocol import parse_event

    with pytest.raises(ProtocolError, match="shutting down"):
        parse_event(encode(error_response("the supervisor is shutting down")))


@pytest.mark.parametrize("cmd", ["metrics", "events"])
def test_metrics_and_events_take_no_names(cmd: str) -> None:
    assert parse_request(encode({"cmd": cmd})) == Request(cmd)
    with pytest.raises(ProtocolError, match="takes no"):
        parse_request(encode({"cmd": cmd, "names": ["x"]}))
