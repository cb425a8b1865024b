"""Reading the KissBot config and the flags: what is accepted, and the exact errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kissbot_supervisor.config.load import (
    TOKEN_TEXT_KEPT_OUT,
    ConfigError,
    load_config,
    read_settings,
)
from kissbot_supervisor.config.settings import Settings

CONFIG = "config/config.yaml"

# A config shaped like KissBot's own: every key but twitch.channels and bot.name
# belongs to the bot and hub and must pass through untouched.
KISSBOT_YAML = """\
twitch:
  client_id: "abcdef0123456789"
  client_secret: "not-a-real-secret"
  bot_id: "1209350837"
  broadcaster_id: 44322889
  channels:
    - El_Serda
    - morthal_
    - pelerin_42
  tokens:
    serda_bot:
      user_id: "1209350837"
      access_token: "aaaa"
      refresh_token: "bbbb"
bot:
  name: serda_bot
  prefix: "!"
timeouts:
  irc_connect: 30
  api_request: 10
announcements:
  enabled: true
  interval_minutes: 30
  messages: ["hello", "world"]
eventsub:
  mode: websocket
  topics: [stream.online, stream.offline]
"""


def write(workdir: Path, text: str, name: str = CONFIG) -> Path:
    path = workdir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_doc(workdir: Path, document: object) -> Path:
    return write(workdir, yaml.safe_dump(document, allow_unicode=True))


def doc(channels: object = ("el_serda",), supervisor: object = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "twitch": {"channels": list(channels) if isinstance(channels, tuple) else channels}
    }
    if supervisor is not None:
        out["supervisor"] = supervisor
    return out


def error_of(workdir: Path, flags: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(workdir, CONFIG, flags)
    return str(info.value)


# --- a real config ----------------------------------------------------------------


def test_a_kissbot_config_loads_and_its_keys_are_left_alone(tmp_path: Path) -> None:
    write(tmp_path, KISSBOT_YAML)
    cfg = load_config(tmp_path)
    assert cfg.channels == ("el_serda", "morthal_", "pelerin_42")
    assert cfg.bot_login == "serda_bot"
    assert cfg.broadcaster_id == "44322889"
    assert cfg.settings == Settings()
    assert cfg.workdir == tmp_path.resolve()
    assert cfg.config_path == Path(CONFIG)
    assert cfg.config_file == tmp_path.resolve() / CONFIG
    # Only what token states need is kept, and no secret of the file (tokens, client_secret).
    assert cfg.document == {
        "bot": {"name": "serda_bot"},
        "twitch": {
            "broadcaster_id": 44322889,
            "tokens": {
                "serda_bot": {
                    "user_id": "1209350837",
                    "access_token": TOKEN_TEXT_KEPT_OUT,
                    "refresh_token": TOKEN_TEXT_KEPT_OUT,
                }
            },
        },
    }
    assert "not-a-real-secret" not in repr(cfg)
    assert cfg.resolve("kissbot.db") == tmp_path.resolve() / "kissbot.db"
    assert cfg.resolve("/var/lib/x.db") == Path("/var/lib/x.db")


def test_bot_name_defaults_to_serda_bot(tmp_path: Path) -> None:
    write_doc(tmp_path, doc())
    cfg = load_config(tmp_path)
    assert cfg.bot_login == "serda_bot"
    assert cfg.broadcaster_id is None


def test_an_absolute_config_path_is_used_as_is(tmp_path: Path) -> None:
    path = write_doc(tmp_path / "elsewhere", doc())
    cfg = load_config(tmp_path, path)
    assert cfg.config_file == path
    assert cfg.channels == ("el_serda",)


# --- channel names -------------------------------------------------------------


def test_a_bad_channel_names_file_index_value_and_rule(tmp_path: Path) -> None:
    write_doc(tmp_path, doc(("el_serda", "morthal_", "ab c")))
    assert error_of(tmp_path) == (
        "config/config.yaml: twitch.channels[2]: 'ab c' is not a Twitch login (4-25 of a-z, 0-9, _)"
    )


@pytest.mark.parametrize(
    "name",
    [
        "a/bcdef",
        "../../etc/passwd",
        "..",
        "....",
        "ünïcødé",
        "\u212aappa_ch",  # KELVIN SIGN: lowercases to an ASCII "k"
        "chànnel",
        "x" * 1000,
        "a" * 26,
        "abc",
        "",
        "@el_serda",
        "$(x)",
        "$(reboot)",
        "el serda",
        "el-serda",
        "el_serda\n",
        "el_serda;rm",
        "el_serda.service",
    ],
)
def test_names_that_are_not_logins_are_rejected(tmp_path: Path, name: str) -> None:
    write_doc(tmp_path, doc(("first_ch", name)))
    message = error_of(tmp_path)
    assert message.startswith("config/config.yaml: twitch.channels[1]: ")
    assert message.endswith("is not a Twitch login (4-25 of a-z, 0-9, _)")


@pytest.mark.parametrize("value", [12345678, 1.5, True, ["el_serda"], {"a": "el_serda"}])
def test_channels_that_are_not_strings_are_rejected(tmp_path: Path, value: object) -> None:
    write_doc(tmp_path, doc(("first_ch", value)))
    message = error_of(tmp_path)
    assert message.startswith("config/config.yaml: twitch.channels[1]: ")
    assert "is not a string" in message


def test_duplicates_after_lowercasing_are_rejected(tmp_path: Path) -> None:
    write_doc(tmp_path, doc(("el_serda", "morthal_", "El_Serda")))
    assert error_of(tmp_path) == (
        "config/config.yaml: twitch.channels[2]: 'El_Serda' is listed twice "
        "(first at twitch.channels[0])"
    )


def test_uppercase_is_lowercased(tmp_path: Path) -> None:
    write_doc(tmp_path, doc(("EL_SERDA", "Pelerin_42")))
    assert load_config(tmp_path).channels == ("el_serda", "pelerin_42")


def test_the_longest_and_shortest_logins_are_accepted(tmp_path: Path) -> None:
    write_doc(tmp_path, doc(("abcd", "a" * 25, "0000", "____")))
    assert load_config(tmp_path).channels == ("abcd", "a" * 25, "0000", "____")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"twitch": {}}, "config/config.yaml: twitch.channels: missing"),
        ({"bot": {}}, "config/config.yaml: twitch.channels: missing"),
        (doc("el_serda"), "config/config.yaml: twitch.channels: expected a list of channel"),
        ({"twitch": ["x"]}, "config/config.yaml: twitch: expected a mapping, got a list"),
    ],
)
def test_channels_must_be_a_list(tmp_path: Path, document: object, expected: str) -> None:
    write_doc(tmp_path, document)
    assert error_of(tmp_path).startswith(expected)


def test_a_bad_bot_name_is_rejected(tmp_path: Path) -> None:
    write_doc(tmp_path, {**doc(), "bot": {"name": "../bot"}})
    assert error_of(tmp_path) == (
        "config/config.yaml: bot.name: '../bot' is not a Twitch login (4-25 of a-z, 0-9, _)"
    )


# --- the supervisor section ----------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "hint"),
    [
        ({"restart": {"dealy_sec": 2}}, "supervisor.restart.dealy_sec", "restart.delay_sec"),
        ({"stop_timout_sec": 2}, "supervisor.stop_timout_sec", "stop_timeout_sec"),
        ({"restrat": {"delay_sec": 2}}, "supervisor.restrat", "restart"),
        ({"hub": {"enable": True}}, "supervisor.hub.enable", "hub.enabled"),
    ],
)
def test_an_unknown_key_suggests_the_close_one(
    tmp_path: Path, section: dict[str, Any], key: str, hint: str
) -> None:
    write_doc(tmp_path, doc(supervisor=section))
    assert error_of(tmp_path) == (
        f"config/config.yaml: {key}: is not a known setting (did you mean supervisor.{hint}?)"
    )


def test_an_unknown_key_with_nothing_close_has_no_hint(tmp_path: Path) -> None:
    write_doc(tmp_path, doc(supervisor={"zzzzzz": 1}))
    assert error_of(tmp_path) == "config/config.yaml: supervisor.zzzzzz: is not a known setting"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"restart": {"delay_sec": "soon"}},
            "supervisor.restart.delay_sec: 'soon' is not a number (seconds expected)",
        ),
        (
            {"restart": {"delay_sec": True}},
            "supervisor.restart.delay_sec: True is not a number (seconds expected)",
        ),
        (
            {"restart": {"give_up_after": 2.5}},
            "supervisor.restart.give_up_after: 2.5 is not a whole number from 0 to 10000 "
            "(whole number expected)",
        ),
        (
            {"stop_timeout_sec": 0},
            "supervisor.stop_timeout_sec: 0 is out of range (expected seconds from 0.1 to 3600)",
        ),
        (
            {"use_db": "maybe"},
            "supervisor.use_db: 'maybe' is not a boolean (expected true or false)",
        ),
        (
            {"bot": {"ready": "sometimes"}},
            "supervisor.bot.ready: 'sometimes' is not one of: file, notify, none",
        ),
        (
            {"bot": {"command": "python3 main.py"}},
            "supervisor.bot.command: 'python3 main.py' is a string (expected a list of arguments",
        ),
        ({"db": ""}, "supervisor.db: '' is empty (expected a file path)"),
        ({"restart": 5}, "supervisor.restart: expected a mapping, got int"),
    ],
)
def test_a_bad_value_names_the_key_the_value_and_the_kind(
    tmp_path: Path, section: dict[str, Any], expected: str
) -> None:
    write_doc(tmp_path, doc(supervisor=section))
    message = error_of(tmp_path)
    assert message.startswith("config/config.yaml: " + expected)
    assert message.count("expected") == 1  # said once, not again in other words


def test_a_channel_taken_for_a_comment_gets_a_hint(tmp_path: Path) -> None:
    write(tmp_path, "twitch:\n  channels:\n    - el_serda\n    - #morthy\n")
    assert error_of(tmp_path) == (
        "config/config.yaml: twitch.channels[1]: is empty; if it reads '- #name', YAML took "
        "'#name' for a comment: write the login without '#' (- el_serda)"
    )


def test_a_key_written_twice_is_an_error_not_silence(tmp_path: Path) -> None:
    write(
        tmp_path,
        "twitch:\n  channels: [el_serda]\nsupervisor:\n  hub:\n    enabled: true\n"
        "supervisor:\n  stop_timeout_sec: 3\n",
    )
    assert error_of(tmp_path) == (
        "config/config.yaml: line 6, column 1: invalid YAML: the key 'supervisor' is written "
        "twice in one mapping (first on line 3); YAML would keep only the second and drop "
        "the first without a word: merge them into one"
    )
    # A merge key (<<) may be overridden: that is what it is for.
    write(
        tmp_path,
        "base: &b {delay_sec: 1}\ntwitch:\n  channels: [el_serda]\n"
        "supervisor:\n  restart:\n    <<: *b\n    delay_sec: 2\n",
    )
    assert load_config(tmp_path, CONFIG).settings.restart_delay_sec == 2


def test_settings_at_the_top_level_are_said_not_ignored(tmp_path: Path) -> None:
    write(
        tmp_path,
        "twitch:\n  channels: [el_serda]\nbot:\n  name: serda_bot\n"
        "stop_timeout_sec: 3\nrestart:\n  delay_sec: 2\n",
    )
    cfg = load_config(tmp_path, CONFIG)
    assert cfg.notes == (
        "config/config.yaml: 'stop_timeout_sec' at the top level is not read: the "
        "supervisor's settings go under 'supervisor:' (supervisor.stop_timeout_sec)",
        "config/config.yaml: 'restart' at the top level is not read: the supervisor's "
        "settings go under 'supervisor:' (supervisor.restart)",
    )
    assert cfg.settings.stop_timeout_sec != 3


def test_each_flag_is_listed_once() -> None:
    from kissbot_supervisor.cli.supervisor import build_parser
    from kissbot_supervisor.config.settings import declarations

    for _name, _default, meta in declarations():
        assert len(set(meta.flags)) == len(meta.flags), meta.flags
    assert build_parser().format_help().count("--hub-socket PATH") == 1


def test_export_units_is_in_the_help_and_has_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    from kissbot_supervisor.cli.supervisor import build_parser, main

    assert "export-units DIR" in build_parser().format_help()
    with pytest.raises(SystemExit) as info:
        main(["export-units", "--help"])
    assert info.value.code == 0
    assert "static systemd unit files" in " ".join(capsys.readouterr().out.split())


def test_a_supervisor_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    write_doc(tmp_path, doc(supervisor=["native"]))
    assert error_of(tmp_path) == "config/config.yaml: supervisor: expected a mapping, got a list"


def test_a_bad_flag_names_the_flag(tmp_path: Path) -> None:
    write_doc(tmp_path, doc())
    assert error_of(tmp_path, {"restart_delay_sec": "x"}) == (
        "command line: --restart-delay-sec: 'x' is not a number (seconds expected)"
    )


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path: Path) -> None:
    write_doc(
        tmp_path,
        doc(
            supervisor={
                "use_db": "yes",
                "db": "data/tokens.db",
                "restart": {"delay_sec": 3, "max_delay_sec": 30},
                "hub": {"enabled": False, "socket": "/run/file.sock"},
            }
        ),
    )
    flags = {"restart_delay_sec": "5", "hub_enabled": True, "db": None}
    s = load_config(tmp_path, CONFIG, flags).settings
    assert s.restart_delay_sec == 5.0  # flag over file
    assert s.hub_enabled is True  # flag over file
    assert s.restart_max_delay_sec == 30.0  # file over default
    assert s.hub_socket == "/run/file.sock"
    assert s.use_db is True
    assert s.db == "data/tokens.db"  # a None flag is "not given"
    assert s.restart_reset_after_sec == Settings().restart_reset_after_sec  # default
    assert s.bot_ready == "file"


def test_read_settings_without_a_section_gives_the_defaults() -> None:
    assert read_settings({}, "x.yaml") == Settings()
    assert read_settings({"supervisor": None}, "x.yaml") == Settings()
    assert read_settings({}, "x.yaml", {"use_db": True}).use_db is True


def test_max_delay_below_the_first_delay_is_an_error(tmp_path: Path) -> None:
    write_doc(tmp_path, doc(supervisor={"restart": {"delay_sec": 10, "max_delay_sec": 5}}))
    assert error_of(tmp_path) == (
        "config/config.yaml: supervisor.restart.max_delay_sec: 5 is below restart.delay_sec "
        "(10); expected at least the first delay"
    )


def test_max_delay_equal_to_the_first_delay_is_fine(tmp_path: Path) -> None:
    write_doc(tmp_path, doc(supervisor={"restart": {"delay_sec": 10, "max_delay_sec": 10}}))
    assert load_config(tmp_path).settings.restart_max_delay_sec == 10.0


# --- the file itself -----------------------------------------------------------------


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    write(tmp_path, "twitch:\n  channels:\n    - el_serda\n  client_id: abc: def\n")
    # libyaml says "in this context", the pure-Python loader "here".
    assert error_of(tmp_path).startswith(
        "config/config.yaml: line 4, column 17: invalid YAML: mapping values are not allowed"
    )


def test_a_missing_file(tmp_path: Path) -> None:
    assert error_of(tmp_path) == "config/config.yaml: the config file does not exist"


def test_a_directory_instead_of_a_file(tmp_path: Path) -> None:
    (tmp_path / CONFIG).mkdir(parents=True)
    assert error_of(tmp_path).startswith("config/config.yaml: cannot be read (")


@pytest.mark.parametrize(("text", "got"), [("- a\n- b\n", "a list"), ("hello\n", "a string")])
def test_the_top_must_be_a_mapping(tmp_path: Path, text: str, got: str) -> None:
    write(tmp_path, text)
    assert error_of(tmp_path) == f"config/config.yaml: expected a mapping at the top, got {got}"


def test_an_empty_file_lacks_the_channels(tmp_path: Path) -> None:
    write(tmp_path, "")
    assert error_of(tmp_path).startswith("config/config.yaml: twitch.channels: missing")


def test_config_error_carries_source_and_key(tmp_path: Path) -> None:
    write_doc(tmp_path, doc(("el_serda", "a/b")))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert (info.value.source, info.value.key) == (CONFIG, "twitch.channels[1]")


# -- the settings file (docs/security.md) ----------------------------------------------


def _settings_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etc" / "supervisor.yaml"
    path.parent.mkdir()
    path.write_text(text)
    return path


def test_a_settings_file_holds_the_settings_and_kissbots_section_is_ignored(
    tmp_path: Path,
) -> None:
    write(tmp_path, "twitch:\n  channels: [a_chan]\nsupervisor:\n  restart:\n    delay_sec: 9\n")
    settings = _settings_file(tmp_path, "supervisor:\n  restart:\n    delay_sec: 3\n")
    cfg = load_config(tmp_path, CONFIG, settings_file=settings)
    assert cfg.settings.restart_delay_sec == 3
    assert cfg.settings_file == settings
    assert len(cfg.notes) == 1
    assert cfg.notes[0].startswith(f"{CONFIG}: the 'supervisor:' section is ignored")
    # Without one, KissBot's config holds them (root's here, so trusted), and no note.
    cfg = load_config(tmp_path, CONFIG)
    assert cfg.settings.restart_delay_sec == 9
    assert cfg.notes == ()


def test_a_settings_file_errors_name_that_file(tmp_path: Path) -> None:
    write(tmp_path, "twitch:\n  channels: [a_chan]\n")
    settings = _settings_file(tmp_path, "supervisor:\n  restart:\n    delay_sec: soon\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path, CONFIG, settings_file=settings)
    assert str(e.value).startswith(f"{settings}: supervisor.restart.delay_sec: ")
    settings.write_text("twitch:\n  channels: [b_chan]\nsupervisor: {}\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path, CONFIG, settings_file=settings)
    assert str(e.value) == (
        f"{settings}: twitch: is not read here: a settings file holds only a 'supervisor:' section"
    )
    settings.unlink()
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path, CONFIG, settings_file=settings)
    assert str(e.value) == f"{settings}: the settings file does not exist"


def test_the_loaded_config_holds_no_token_text(tmp_path: Path) -> None:
    # KISSBOT_YAML has tokens "aaaa" and "bbbb"; the supervisor reads them again from
    # the file when a process starts (tokens/gate.py), and keeps none.
    write(
        tmp_path,
        KISSBOT_YAML.replace('"aaaa"', '"tok-access-7f3a"').replace('"bbbb"', '"tok-refresh-91c2"'),
    )
    cfg = load_config(tmp_path, CONFIG)
    assert "tok-access-7f3a" not in repr(cfg)
    assert "tok-refresh-91c2" not in repr(cfg)
    entry = cfg.document["twitch"]["tokens"]["serda_bot"]
    assert entry["user_id"] == "1209350837"  # what the token states need stays
    assert entry["access_token"] == TOKEN_TEXT_KEPT_OUT
    # The states read from it are those of the real file.
    from kissbot_supervisor.tokens.states import TokenState, read_yaml_tokens

    tokens = read_yaml_tokens(cfg.document, cfg.config_path, 0.0)
    assert tokens is not None
    assert tokens.bot.state is TokenState.VALID
    # An empty token stays empty: it still reads "missing".
    write(tmp_path, KISSBOT_YAML.replace('"aaaa"', '""'))
    tokens = read_yaml_tokens(load_config(tmp_path, CONFIG).document, Path(CONFIG), 0.0)
    assert tokens is not None
    assert tokens.bot.state is TokenState.MISSING
