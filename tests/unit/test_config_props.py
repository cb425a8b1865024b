"""Property-based tests of the config loader: whatever the file holds, one clear error or a config.

The property, for every input: ``load_config`` returns a :class:`Config`
whose channels are all Twitch logins, or raises :class:`ConfigError` whose
message is one line that starts with the file (or ``command line``) and, when
a key is at fault, names its key path. Never another exception, never a crash
(the resident daemon parses YAML in a child: its path is checked too, on the
inputs that used to crash or hang it).

The settings are generated from the declarations in ``settings.py``, so a new
setting is covered without touching this file.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kissbot_supervisor.config import yamlparse
from kissbot_supervisor.config.load import Config, ConfigError, load_config
from kissbot_supervisor.config.settings import Settings, SettingValueError, declarations
from kissbot_supervisor.kissbot.names import LOGIN_RE

CONFIG = "config/config.yaml"
# One line, and short enough to read: a value is quoted cut short, never in full.
MAX_MESSAGE = 2000
# A key path: dotted words and indexes; a name that is not a plain word is quoted.
KEY_PATH = re.compile(
    r"(twitch|bot|supervisor)(\.[A-Za-z0-9_.-]+|\.'.*'|\.\".*\"|\.-?[0-9].*|\[\d+\])*"
    r"|line \d+, column \d+"
)
WHOLE_FILE_FAULTS = (
    "the config file does not exist",
    "cannot be read",
    "could not be parsed",
    "invalid YAML",
    "expected a mapping at the top",
)
SETTINGS = [(name, meta.key, meta) for name, _default, meta in declarations()]
FLAG_SETTINGS = [(name, meta) for name, _default, meta in declarations() if meta.flags]
# Hypothesis runs many examples in one test call; a fresh directory per example
# (not pytest's function-scoped tmp_path) keeps them apart.
NO_FIXTURE_CHECK = settings(suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def workdir_with(content: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kissbot-props-") as top:
        workdir = Path(top)
        (workdir / "config").mkdir()
        (workdir / CONFIG).write_bytes(content)
        yield workdir


def dump(document: object) -> bytes:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False).encode("utf-8")


def check_config(cfg: Config) -> None:
    """What a loaded config promises: logins only, once each, and typed settings."""
    for channel in cfg.channels:
        assert channel.isascii(), channel
        assert LOGIN_RE.fullmatch(channel), channel
    assert len(set(cfg.channels)) == len(cfg.channels)
    assert LOGIN_RE.fullmatch(cfg.bot_login)
    assert cfg.bot_login.isascii()
    assert isinstance(cfg.settings, Settings)
    assert cfg.settings.restart_max_delay_sec >= cfg.settings.restart_delay_sec


def check_error(error: ConfigError, source: str = CONFIG) -> str:
    """One clear line: the source, then the key path when a key is at fault."""
    message = str(error)
    assert "\n" not in message, message[:300]
    assert "\r" not in message, message[:300]
    assert len(message) <= MAX_MESSAGE, message[:300]
    assert error.source == source
    if error.key is None:
        assert message.startswith(f"{source}: ")
        assert any(f in message for f in WHOLE_FILE_FAULTS), message
    else:
        assert message.startswith(f"{source}: {error.key}: "), message
        assert KEY_PATH.fullmatch(error.key) or source == "command line", error.key
    return message


def outcome(content: bytes, flags: dict[str, Any] | None = None) -> Config | ConfigError:
    """load_config on a file holding ``content``: anything but Config/ConfigError fails."""
    with workdir_with(content) as workdir:
        try:
            cfg = load_config(workdir, CONFIG, flags)
        except ConfigError as e:
            return e
    check_config(cfg)
    return cfg


# --- strategies ---------------------------------------------------------------------

# Scalars as YAML gives them: every type, the extremes (ints past float range,
# NaN, infinities) and text with the characters that matter in paths, unit
# names and shells.
NASTY = "/.\\ ;$()`@\n\t\0'\"#*&!|%{}[]:,-_\u212a\u00e9\u0130\U0001f600"
texts = st.text(max_size=40) | st.text(alphabet=NASTY + "abcdefgh0123_", max_size=30)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
    | st.sampled_from(["", "0", "-1", "1e999", "nan", "inf", "512M", "2G", "yes", "off"])
    # Digits that str.isdigit() accepts and int() does not, and near-valid addresses.
    | st.sampled_from(["²", "1²", ":²", "127.0.0.1:²", "[::1]:٣", "١٢", "½", "0x10", "1_000"])
    | st.sampled_from(["unix:", "unix:rel", "127.0.0.1:0", "[::1]:65536", "1.2.3.4:", "/", "~"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
    max_leaves=20,
)

channel_names = (
    st.from_regex(r"[a-zA-Z0-9_]{4,25}", fullmatch=True)
    | st.text(alphabet=NASTY + "abcdXYZ019_", min_size=0, max_size=30)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "a/bcdef",
            "../../etc/passwd",
            "..",
            "....",
            "el serda",
            "el;serda",
            "$(reboot)",
            "`id`xx",
            "bot@x.service",
            "el\\serda",
            "el_serda\n",
            "el\0serda",
            "x" * 1000,
            "\u212aappa_ch",
            "\u0130stanbul",
            "ｆｕｌｌｗｉｄｔｈ",
            "-rf_x",
            "el_serda.service",
        ]
    )
)


def set_path(document: dict[str, Any], dotted: str, value: object) -> None:
    node = document
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


# --- arbitrary documents ------------------------------------------------------------


@NO_FIXTURE_CHECK
@given(
    twitch=values
    | st.fixed_dictionaries({}, optional={"channels": values, "broadcaster_id": values}),
    bot=values | st.fixed_dictionaries({}, optional={"name": values}),
    supervisor=values,
    extra=st.dictionaries(texts, values, max_size=3),
)
def test_any_document_loads_or_fails_clearly(
    twitch: object, bot: object, supervisor: object, extra: dict[str, object]
) -> None:
    document = {**extra, "twitch": twitch, "bot": bot, "supervisor": supervisor}
    result = outcome(dump(document))
    if isinstance(result, ConfigError):
        check_error(result)


@NO_FIXTURE_CHECK
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8")))
@example(b"\xff\xfe garbage")
@example("twitch:\n  channels: [\u00e9".encode())
@example(b"twitch: {channels: [abcd]}\n\0")
@example(b"%YAML 9.9\n---\n")
@example(b"--- !!python/object:os.system\n")
@example(b"twitch:\n  channels: [abcd]\nsupervisor:\n  stop_timeout_sec: 1" + b"0" * 5000)
def test_any_bytes_load_or_fail_clearly(content: bytes) -> None:
    result = outcome(content)
    if isinstance(result, ConfigError):
        check_error(result)


# --- every declared setting, any value ----------------------------------------------


@NO_FIXTURE_CHECK
@given(setting=st.sampled_from(SETTINGS), value=values)
def test_any_value_of_any_setting_is_parsed_or_named(
    setting: tuple[str, str, Any], value: object
) -> None:
    name, key, meta = setting
    document: dict[str, Any] = {"twitch": {"channels": ["el_serda"]}}
    set_path(document, f"supervisor.{key}", value)
    content = dump(document)
    as_read = yaml.safe_load(content)["supervisor"]  # what the file says, after YAML
    for part in key.split("."):
        as_read = as_read[part]
    result = outcome(content)
    try:
        expected = meta.parse(as_read)
    except SettingValueError:
        assert isinstance(result, ConfigError), f"{key}: {as_read!r} was accepted"
        message = check_error(result)
        assert result.key == f"supervisor.{key}"
        # What is expected is said, once: by the rule itself, else by the setting's kind.
        # (Not counting the value quoted back, which may itself hold the word.)
        said = message.replace(repr(as_read), "")
        assert said.count("expected") == 1 or meta.kind.startswith("one of")
        return
    if isinstance(result, ConfigError):
        # The one rule across settings: the longest restart delay is at least the first.
        assert key in ("restart.delay_sec", "restart.max_delay_sec"), str(result)
        assert result.key == "supervisor.restart.max_delay_sec"
        check_error(result)
        return
    assert getattr(result.settings, name) == expected


@NO_FIXTURE_CHECK
@given(setting=st.sampled_from(FLAG_SETTINGS), value=texts | st.booleans())
def test_any_flag_value_is_parsed_or_names_the_flag(
    setting: tuple[str, Any], value: object
) -> None:
    name, meta = setting
    result = outcome(dump({"twitch": {"channels": ["el_serda"]}}), {name: value})
    try:
        meta.parse(value)
    except SettingValueError:
        assert isinstance(result, ConfigError)
        assert result.key == meta.flags[0]
        check_error(result, "command line")


@pytest.mark.parametrize(("name", "key", "meta"), SETTINGS, ids=[k for _, k, _ in SETTINGS])
def test_a_section_where_a_setting_belongs_is_named(name: str, key: str, meta: Any) -> None:
    """A mapping or a list where a value belongs, and the other way round."""
    del name, meta
    for value in ({"nested": 1}, [[1, 2], {"a": None}]):
        document: dict[str, Any] = {"twitch": {"channels": ["el_serda"]}}
        set_path(document, f"supervisor.{key}", value)
        result = outcome(dump(document))
        if isinstance(result, ConfigError):
            assert result.key == f"supervisor.{key}"
            check_error(result)
    if "." in key:
        section = key.split(".", maxsplit=1)[0]
        document = {"twitch": {"channels": ["el_serda"]}, "supervisor": {section: 42}}
        result = outcome(dump(document))
        assert isinstance(result, ConfigError)
        assert result.key == f"supervisor.{section}"
        check_error(result)


# --- channel names ------------------------------------------------------------------


@NO_FIXTURE_CHECK
@given(names=st.lists(channel_names, min_size=1, max_size=4), bot_name=channel_names)
def test_only_twitch_logins_become_channels(names: list[str], bot_name: str) -> None:
    document = {"twitch": {"channels": names}, "bot": {"name": bot_name}}
    content = dump(document)
    as_read = yaml.safe_load(content)
    result = outcome(content)
    read_names = as_read["twitch"]["channels"]
    # The first fault in list order: a name that is not a login, or one seen before.
    seen: set[str] = set()
    first_fault = None
    for index, name in enumerate(read_names):
        if not (name.isascii() and LOGIN_RE.fullmatch(name.lower())) or name.lower() in seen:
            first_fault = index
            break
        seen.add(name.lower())
    if isinstance(result, Config):
        assert first_fault is None
        assert result.channels == tuple(n.lower() for n in read_names)
        return
    message = check_error(result)
    if first_fault is not None:
        assert result.key == f"twitch.channels[{first_fault}]", message
        assert (
            message.endswith(
                (
                    "is not a Twitch login (4-25 of a-z, 0-9, _)",
                    "is not a string (expected a Twitch login)",
                )
            )
            or "is listed twice" in message
        ), message
    else:
        assert result.key == "bot.name", message


# --- truncated files -----------------------------------------------------------------

FULL = (
    """\
# KissBot config: every key the bot, the hub and the supervisor read. é ✓ 😀
twitch:
  client_id: "abcdef0123456789"
  client_secret: "not-a-real-secret"
  broadcaster_id: 44322889
  channels:
    - El_Serda
    - morthal_
    - pelerin_42
bot:
  name: serda_bot
announcements:
  messages: ["héllo", "wörld ✓"]
"""
    + yaml.safe_dump(
        {
            "supervisor": {
                "backend": "native",
                "use_db": True,
                "db": "data/kissbot.db",
                "stop_timeout_sec": 7.5,
                "bot": {"ready": "notify", "command": ["{python}", "main.py", "{channel}"]},
                "hub": {"enabled": True, "socket": "/run/kissbot/hub.sock"},
                "restart": {"delay_sec": 0.5, "max_delay_sec": 30, "give_up_after": 4},
                "logs": {"max_bytes": 1048576, "backups": 2},
                "systemd": {"memory_max": "2G", "read_write_paths": ["/srv/kissbot"]},
            }
        },
        sort_keys=False,
    )
).encode("utf-8")


def test_a_config_cut_at_every_byte_loads_or_fails_clearly() -> None:
    complete = outcome(FULL)
    assert isinstance(complete, Config), complete
    assert complete.channels == ("el_serda", "morthal_", "pelerin_42")
    accepted = 0
    for offset in range(len(FULL)):
        result = outcome(FULL[:offset])
        if isinstance(result, ConfigError):
            check_error(result)
        else:
            accepted += 1
            # A cut inside a name can leave a shorter login, never anything else.
            assert len(result.channels) <= 3
    assert accepted > 0  # cuts after the last channel line still load


# --- the daemon's path: the YAML parsed in a child process ---------------------------


def _alias_bomb(levels: int) -> bytes:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines += ["twitch:", "  channels: [el_serda]", "supervisor:", "  bot:"]
    lines.append(f"    command: [python, *a{levels - 1}]")
    return "\n".join(lines).encode() + b"\n"


def _alias_chain(length: int) -> bytes:
    lines = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [*l{i - 1}]" for i in range(1, length)]
    lines += ["twitch:", f"  channels: *l{length - 1}"]
    return "\n".join(lines).encode() + b"\n"


HOSTILE = {
    # libyaml composes recursively in C: this used to kill the parser with SIGSEGV.
    "flow-depth-bomb": b"twitch:\n  channels: " + b"[" * 50_000 + b"]" * 50_000 + b"\n",
    # A thousand levels overflowed repr() of the error message (RecursionError).
    "depth-1000": b"twitch:\n  channels: " + b"[" * 1000 + b"]" * 1000 + b"\n",
    # 10**7 values once expanded: a 100 MB message, seconds of work, GBs of JSON.
    "alias-bomb": _alias_bomb(7),
    "alias-chain-depth": _alias_chain(2000),
    "recursive-alias": b"twitch:\n  channels: &x [*x]\n",
    # Past Python's 4300-digit int() limit: PyYAML raised ValueError.
    "int-5000-digits": b"twitch: {channels: [abcd]}\nsupervisor: {stop_timeout_sec: 1"
    + b"0" * 5000
    + b"}\n",
    # Past the float range: float() raised OverflowError.
    "int-400-digits": b"twitch: {channels: [abcd]}\nsupervisor: {stop_timeout_sec: 1"
    + b"0" * 400
    + b"}\n",
    "size-400-digits": b"twitch: {channels: [abcd]}\nsupervisor:\n  systemd: {memory_max: '"
    + b"9" * 400
    + b"'}\n",
}


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "child"])
@pytest.mark.parametrize("content", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_documents_fail_clearly_on_both_paths(content: bytes, isolate: bool) -> None:
    with workdir_with(content) as workdir, pytest.raises(ConfigError) as info:
        load_config(workdir, CONFIG, isolate=isolate)
    message = check_error(info.value)
    assert "exited" not in message  # the child answered; it did not crash


def test_the_depth_bound_is_our_own_not_only_libyamls() -> None:
    """libyaml's own nesting limit (1000) may stop a bomb before ours: ours must
    hold without it, so it is checked here on PyYAML's pure-Python parser."""
    raw = b"twitch: " + b"[" * 100 + b"]" * 100
    error = yamlparse._depth_error(raw, yaml, yaml.SafeLoader)
    # The top mapping is level 1: the 64th "[" (column 8 + 64) is one too many.
    assert error == {
        "line": 1,
        "column": 8 + yamlparse.MAX_DEPTH,
        "problem": f"nested deeper than {yamlparse.MAX_DEPTH} levels",
    }


def test_a_moderately_nested_document_still_loads() -> None:
    """The bounds leave room for any real config (and the bot's own keys)."""
    deep: object = "leaf"
    for _ in range(30):  # 60 levels
        deep = {"k": [deep]}
    content = dump({"twitch": {"channels": ["el_serda"]}, "announcements": deep})
    result = outcome(content)
    assert isinstance(result, Config)


def test_values_in_errors_are_cut_short() -> None:
    huge = ["x" * 50] * 10_000
    result = outcome(
        dump({"twitch": {"channels": ["el_serda"]}, "supervisor": {"bot": {"command": [huge]}}})
    )
    assert isinstance(result, ConfigError)
    message = check_error(result)
    assert len(message) < 1000
