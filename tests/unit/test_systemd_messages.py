"""systemd's D-Bus calls as messages, and the parsers, on hand-built messages (no bus)."""

from __future__ import annotations

import signal

import pytest
from jeepney import (
    DBusAddress,
    MatchRule,
    new_error,
    new_method_call,
    new_method_return,
    new_signal,
)
from jeepney.low_level import HeaderFields, Message, MessageType

from kissbot_supervisor.backends.systemd import messages as m
from kissbot_supervisor.kissbot.names import HUB_UNIT, bot_unit

SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_UNIQUE = ":1.3"  # the sender of systemd's signals on the wire: its unique name
UNIT_PATH = "/org/freedesktop/systemd1/unit/kissbot_2dbot_40el_5fserda_2eservice"
JOB_PATH = "/org/freedesktop/systemd1/job/42"


def wire(msg: Message, serial: int = 3) -> Message:
    """The message as the other side parses it after a trip through the wire format."""
    return Message.from_buffer(msg.serialise(serial=serial))


def call_fields(msg: Message) -> tuple[object, ...]:
    f = msg.header.fields
    return (
        f[HeaderFields.path],
        f[HeaderFields.destination],
        f.get(HeaderFields.interface),
        f[HeaderFields.member],
        f.get(HeaderFields.signature),
    )


def reply_to(call: Message, signature: str | None, body: tuple[object, ...]) -> Message:
    return wire(new_method_return(wire(call), signature, body), serial=9)


# --- object paths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "label"),
    [
        ("kissbot-bot@el_serda.service", "kissbot_2dbot_40el_5fserda_2eservice"),
        ("kissbot-hub.service", "kissbot_2dhub_2eservice"),
        ("kissbot.slice", "kissbot_2eslice"),
        ("4you.service", "_34you_2eservice"),  # a leading digit is escaped, later ones not
        ("a1.service", "a1_2eservice"),
        ("café", "caf_c3_a9"),  # byte by byte, lowercase hex
        ("", "_"),
    ],
)
def test_unit_path_escaping(unit: str, label: str) -> None:
    assert m.unit_path(unit) == "/org/freedesktop/systemd1/unit/" + label
    assert m.unit_name_of_path(m.unit_path(unit)) == unit


def test_unit_path_of_a_bot() -> None:
    assert m.unit_path(bot_unit("el_serda")) == UNIT_PATH


@pytest.mark.parametrize(
    "path",
    ["/org/freedesktop/systemd1", "/org/freedesktop/systemd1/job/42", f"{UNIT_PATH}/sub"],
)
def test_unit_name_of_foreign_paths(path: str) -> None:
    assert m.unit_name_of_path(path) is None


def test_bus_label_unescape_keeps_a_broken_escape_literal() -> None:
    assert m.bus_label_unescape("a_zz_2") == "a_zz_2"


# --- method calls ---------------------------------------------------------------------------


def test_start_transient_unit() -> None:
    props = [
        ("Description", ("s", "x")),
        ("ExecStart", ("a(sasb)", [("/bin/true", ["true"], False)])),
    ]
    msg = m.start_transient_unit(HUB_UNIT, props)
    assert call_fields(msg) == (
        "/org/freedesktop/systemd1",
        SYSTEMD,
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
    )
    assert wire(msg).body == ("kissbot-hub.service", "fail", props, [])


@pytest.mark.parametrize(
    ("build", "member", "signature", "body"),
    [
        (lambda: m.start_unit("u.service"), "StartUnit", "ss", ("u.service", "replace")),
        (lambda: m.restart_unit("u.service"), "RestartUnit", "ss", ("u.service", "replace")),
        (lambda: m.stop_unit("u.service", "fail"), "StopUnit", "ss", ("u.service", "fail")),
        (
            lambda: m.kill_unit("u.service", "main", signal.SIGABRT),
            "KillUnit",
            "ssi",
            ("u.service", "main", 6),
        ),
        (lambda: m.reset_failed_unit("u.service"), "ResetFailedUnit", "s", ("u.service",)),
        (lambda: m.get_unit("u.service"), "GetUnit", "s", ("u.service",)),
        (lambda: m.load_unit("u.service"), "LoadUnit", "s", ("u.service",)),
        (
            lambda: m.list_units_by_patterns([], ["kissbot-*"]),
            "ListUnitsByPatterns",
            "asas",
            ([], ["kissbot-*"]),
        ),
        (m.subscribe, "Subscribe", None, ()),
    ],
)
def test_manager_calls(build: object, member: str, signature: str | None, body: object) -> None:
    assert callable(build)
    msg = build()
    assert call_fields(msg) == (
        "/org/freedesktop/systemd1",
        SYSTEMD,
        "org.freedesktop.systemd1.Manager",
        member,
        signature,
    )
    assert wire(msg).body == body


def test_bad_mode_and_whom_are_refused() -> None:
    with pytest.raises(ValueError, match="job mode"):
        m.start_unit("u.service", "now")
    with pytest.raises(ValueError, match="main, control, all"):
        m.kill_unit("u.service", "everyone", 15)


def test_properties_calls() -> None:
    msg = m.get_all_properties(UNIT_PATH, m.SERVICE_INTERFACE)
    assert call_fields(msg) == (
        UNIT_PATH,
        SYSTEMD,
        "org.freedesktop.DBus.Properties",
        "GetAll",
        "s",
    )
    assert wire(msg).body == ("org.freedesktop.systemd1.Service",)
    msg = m.get_property(UNIT_PATH, m.UNIT_INTERFACE, "ActiveState")
    assert call_fields(msg)[3:] == ("Get", "ss")
    assert wire(msg).body == ("org.freedesktop.systemd1.Unit", "ActiveState")
    msg = m.manager_version()
    assert call_fields(msg)[0] == "/org/freedesktop/systemd1"
    assert wire(msg).body == ("org.freedesktop.systemd1.Manager", "Version")


# --- match rules ------------------------------------------------------------------------------


def unit_signal(path: str, member: str, signature: str, body: tuple[object, ...]) -> Message:
    emitter = DBusAddress(path, interface="org.freedesktop.DBus.Properties")
    msg = new_signal(emitter, member, signature, body)
    msg.header.fields[HeaderFields.sender] = SYSTEMD_UNIQUE  # as the bus daemon sets it
    return wire(msg)


def manager_signal(member: str, signature: str, body: tuple[object, ...]) -> Message:
    emitter = DBusAddress("/org/freedesktop/systemd1", interface="org.freedesktop.systemd1.Manager")
    msg = new_signal(emitter, member, signature, body)
    msg.header.fields[HeaderFields.sender] = SYSTEMD_UNIQUE
    return wire(msg)


CHANGED = unit_signal(
    UNIT_PATH,
    "PropertiesChanged",
    "sa{sv}as",
    (
        "org.freedesktop.systemd1.Service",
        {"Result": ("s", "exit-code"), "NRestarts": ("u", 3), "ExecMainStatus": ("i", 1)},
        ["ExecMainStartTimestamp"],
    ),
)
JOB_REMOVED = manager_signal("JobRemoved", "uoss", (42, JOB_PATH, "kissbot-hub.service", "done"))
UNIT_REMOVED = manager_signal("UnitRemoved", "so", ("kissbot-hub.service", m.unit_path(HUB_UNIT)))


def test_match_rules_match_signals_as_they_arrive() -> None:
    rule = m.match_properties_changed()
    assert rule.matches(CHANGED)
    assert not rule.matches(JOB_REMOVED)
    outside = unit_signal(
        "/org/freedesktop/systemd1",
        "PropertiesChanged",
        "sa{sv}as",
        ("org.freedesktop.systemd1.Manager", {}, []),
    )
    assert not rule.matches(outside)
    assert m.match_job_removed().matches(JOB_REMOVED)
    assert not m.match_job_removed().matches(UNIT_REMOVED)
    assert m.match_unit_removed().matches(UNIT_REMOVED)
    assert not m.match_unit_removed().matches(CHANGED)


def test_add_match_restricts_the_sender_for_the_bus_daemon() -> None:
    msg = m.add_match(m.match_properties_changed())
    assert msg.header.fields[HeaderFields.destination] == "org.freedesktop.DBus"
    assert msg.header.fields[HeaderFields.member] == "AddMatch"
    assert wire(msg).body == (
        "type='signal',sender='org.freedesktop.systemd1',interface='org.freedesktop.DBus.Properties',"
        "member='PropertiesChanged',path_namespace='/org/freedesktop/systemd1/unit'",
    )
    assert wire(m.add_match(m.match_job_removed())).body == (
        "type='signal',sender='org.freedesktop.systemd1',interface='org.freedesktop.systemd1.Manager',"
        "member='JobRemoved',path='/org/freedesktop/systemd1'",
    )
    unrestricted = m.add_match(m.match_unit_removed(), sender=None)
    assert "sender" not in wire(unrestricted).body[0]


# --- parsers ----------------------------------------------------------------------------------


def test_parse_job_removed() -> None:
    assert m.parse_job_removed(JOB_REMOVED) == m.JobRemoved(
        42, JOB_PATH, "kissbot-hub.service", "done"
    )


def test_parse_unit_removed() -> None:
    assert m.parse_unit_removed(UNIT_REMOVED) == m.UnitRemoved(
        "kissbot-hub.service", "/org/freedesktop/systemd1/unit/kissbot_2dhub_2eservice"
    )


def test_parse_properties_changed_unwraps_variants() -> None:
    parsed = m.parse_properties_changed(CHANGED)
    assert parsed.path == UNIT_PATH
    assert m.unit_name_of_path(parsed.path) == "kissbot-bot@el_serda.service"
    assert parsed.interface == "org.freedesktop.systemd1.Service"
    assert parsed.changed == {"Result": "exit-code", "NRestarts": 3, "ExecMainStatus": 1}
    assert parsed.invalidated == ("ExecMainStartTimestamp",)


def test_parsers_refuse_the_wrong_signal() -> None:
    with pytest.raises(ValueError, match="not a JobRemoved"):
        m.parse_job_removed(UNIT_REMOVED)
    odd = manager_signal("JobRemoved", "us", (1, "x"))
    with pytest.raises(ValueError, match="signature"):
        m.parse_job_removed(odd)


def test_parse_replies() -> None:
    call = m.start_unit("kissbot-hub.service")
    assert m.parse_object_path(reply_to(call, "o", (JOB_PATH,))) == JOB_PATH
    call = m.get_all_properties(UNIT_PATH, m.UNIT_INTERFACE)
    reply = reply_to(call, "a{sv}", ({"ActiveState": ("s", "active"), "NRestarts": ("u", 0)},))
    assert m.parse_get_all(reply) == {"ActiveState": "active", "NRestarts": 0}
    call = m.get_property(UNIT_PATH, m.SERVICE_INTERFACE, "MainPID")
    assert m.parse_get(reply_to(call, "v", (("u", 1234),))) == 1234
    call = m.manager_version()
    assert m.parse_version(reply_to(call, "v", (("s", "252.39-1~deb12u2"),))) == 252


def test_parse_list_units() -> None:
    call = m.list_units_by_patterns([], ["kissbot-*"])
    row = (
        "kissbot-hub.service",
        "KissBot EventSub hub",
        "loaded",
        "active",
        "running",
        "",
        m.unit_path(HUB_UNIT),
        0,
        "",
        "/",
    )
    reply = reply_to(call, "a(ssssssouso)", ([row],))
    (info,) = m.parse_list_units(reply)
    assert info == m.UnitInfo(*row)
    assert (info.active_state, info.sub_state, info.job_id) == ("active", "running", 0)


def test_error_replies_raise_with_their_name() -> None:
    call = wire(m.get_unit("kissbot-bot@el_serda.service"))
    error = new_error(
        call, m.ERROR_NO_SUCH_UNIT, "s", ("Unit kissbot-bot@el_serda.service not loaded.",)
    )
    parsed_error = wire(error, serial=10)
    assert parsed_error.header.message_type == MessageType.error
    with pytest.raises(m.SystemdError) as info:
        m.parse_object_path(parsed_error)
    assert info.value.name == "org.freedesktop.systemd1.NoSuchUnit"
    assert "not loaded" in info.value.message


@pytest.mark.parametrize(
    ("text", "major"), [("252.39-1~deb12u2", 252), ("254", 254), ("v255-rc1", 255), ("256.4", 256)]
)
def test_version_text(text: str, major: int) -> None:
    assert m.parse_version_text(text) == major


def test_version_text_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a systemd version"):
        m.parse_version_text("unknown")


def test_unrelated_jeepney_call_still_builds() -> None:
    # The builders return plain jeepney messages: the I/O layer sends them as they are.
    msg = new_method_call(m.MANAGER, "Reload")
    assert msg.serialise(serial=1)[:1] == b"l"


def test_match_string_quotes_values_and_keeps_a_given_sender() -> None:
    rule = MatchRule(type="signal", sender=":1.7", path_namespace="/a'b")
    assert m.match_string(rule, sender="org.freedesktop.systemd1") == (
        "type='signal',sender=':1.7',path_namespace='/a'\\''b'"
    )
    rule.add_arg_condition(0, "x")
    with pytest.raises(ValueError, match="argument conditions"):
        m.match_string(rule)
