"""From a Config to ProcessSpecs: the exact upstream argv, the interpreter, custom commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kissbot_supervisor.config.load import Config, ConfigError, load_config
from kissbot_supervisor.config.specs import build_policy, build_specs, kissbot_python
from kissbot_supervisor.core import HUB, Policy

CONFIG = "config/config.yaml"
CHANNELS = ("el_serda", "morthal_")


def make_config(
    workdir: Path, supervisor: dict[str, Any] | None = None, flags: dict[str, Any] | None = None
) -> Config:
    document: dict[str, Any] = {"twitch": {"channels": list(CHANNELS)}}
    if supervisor is not None:
        document["supervisor"] = supervisor
    path = workdir / CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return load_config(workdir, CONFIG, flags)


def bot_argv(channel: str, *extra: str, python: str = "python3") -> tuple[str, ...]:
    return (python, "main.py", "--channel", channel, "--config", CONFIG, *extra)


def test_plain_bots_get_the_exact_upstream_argv(tmp_path: Path) -> None:
    specs = build_specs(make_config(tmp_path))
    assert [s.name for s in specs] == list(CHANNELS)
    assert specs[0].argv == (
        "python3",
        "main.py",
        "--channel",
        "el_serda",
        "--config",
        "config/config.yaml",
        "--eventsub",
        "direct",
    )
    assert specs[1].argv == bot_argv("morthal_", "--eventsub", "direct")
    assert all(not s.is_hub for s in specs)
    assert (specs[0].ready, specs[0].watchdog_sec, specs[0].start_timeout_sec) == (
        "file",
        0.0,
        120.0,
    )


def test_use_db_adds_use_db_and_db(tmp_path: Path) -> None:
    specs = build_specs(make_config(tmp_path, flags={"use_db": True}))
    assert specs[0].argv == bot_argv(
        "el_serda", "--eventsub", "direct", "--use-db", "--db", "kissbot.db"
    )


def test_use_db_with_a_db_from_the_file(tmp_path: Path) -> None:
    specs = build_specs(make_config(tmp_path, {"use_db": True, "db": "data/k.db"}))
    assert specs[0].argv[-3:] == ("--use-db", "--db", "data/k.db")


def test_hub_mode_argv_for_the_hub_and_the_bots(tmp_path: Path) -> None:
    specs = build_specs(make_config(tmp_path, flags={"hub_enabled": True}))
    assert [s.name for s in specs] == [HUB, *CHANNELS]
    hub = specs[0]
    assert hub.is_hub
    assert hub.argv == (
        "python3",
        "eventsub_hub.py",
        "--config",
        "config/config.yaml",
        "--db",
        "kissbot.db",
        "--socket",
        "/tmp/kissbot_hub.sock",
    )
    assert (hub.ready, hub.start_timeout_sec) == ("protocol", 30.0)
    assert specs[1].argv == bot_argv(
        "el_serda", "--eventsub", "hub", "--hub-socket", "/tmp/kissbot_hub.sock"
    )


def test_hub_mode_with_use_db_keeps_the_upstream_order(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        flags={"hub_enabled": True, "use_db": True, "db": "x.db", "hub_socket": "/run/h.sock"},
    )
    hub, bot, _ = build_specs(cfg)
    assert hub.argv[1:] == (
        "eventsub_hub.py",
        "--config",
        CONFIG,
        "--db",
        "x.db",
        "--socket",
        "/run/h.sock",
    )
    assert bot.argv == bot_argv(
        "el_serda", "--eventsub", "hub", "--use-db", "--db", "x.db", "--hub-socket", "/run/h.sock"
    )


def test_the_kissbot_venv_is_used_when_it_exists(tmp_path: Path) -> None:
    assert kissbot_python(tmp_path) == "python3"
    venv_python = tmp_path / "kissbot-venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text("")
    cfg = make_config(tmp_path, flags={"hub_enabled": True})
    expected = str(tmp_path.resolve() / "kissbot-venv" / "bin" / "python")
    hub, bot, _ = build_specs(cfg)
    assert hub.argv[0] == expected
    assert bot.argv == bot_argv(
        "el_serda", "--eventsub", "hub", "--hub-socket", "/tmp/kissbot_hub.sock", python=expected
    )


def test_an_explicit_python_wins(tmp_path: Path) -> None:
    specs = build_specs(make_config(tmp_path), python="/opt/py/bin/python3")
    assert specs[0].argv[0] == "/opt/py/bin/python3"


def test_a_custom_bot_command_with_every_placeholder(tmp_path: Path) -> None:
    command = [
        "{supervisor_python}",
        "-m",
        "kissbot_supervisor.demo.bot",
        "--channel={channel}",
        "--config",
        "{config}",
        "--db",
        "{db}",
        "--mode",
        "{eventsub}",
        "--socket",
        "{hub_socket}",
        "--py",
        "{python}",
        "{{literal}}",
    ]
    cfg = make_config(
        tmp_path,
        {
            "bot": {
                "command": command,
                "ready": "notify",
                "watchdog_sec": 15,
                "start_timeout_sec": 0,
            }
        },
    )
    specs = build_specs(cfg)
    assert specs[1].argv == (
        sys.executable,
        "-m",
        "kissbot_supervisor.demo.bot",
        "--channel=morthal_",
        "--config",
        CONFIG,
        "--db",
        "kissbot.db",
        "--mode",
        "direct",
        "--socket",
        "/tmp/kissbot_hub.sock",
        "--py",
        "python3",
        "{literal}",
    )
    assert (specs[1].ready, specs[1].watchdog_sec, specs[1].start_timeout_sec) == (
        "notify",
        15.0,
        0.0,
    )


def test_a_custom_hub_command(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path, {"hub": {"enabled": True, "command": ["{python}", "hub.py", "{hub_socket}"]}}
    )
    assert build_specs(cfg)[0].argv == ("python3", "hub.py", "/tmp/kissbot_hub.sock")


@pytest.mark.parametrize(
    ("section", "key", "arg", "field"),
    [
        (
            {"bot": {"command": ["{python}", "main.py", "--c", "{chanel}"]}},
            "supervisor.bot.command[3]",
            "'{chanel}'",
            "{chanel}",
        ),
        (
            {"bot": {"command": ["{python}", "--x={0}"]}},
            "supervisor.bot.command[1]",
            "'--x={0}'",
            "{0}",
        ),
        (
            {"hub": {"enabled": True, "command": ["{pyhton}", "hub.py"]}},
            "supervisor.hub.command[0]",
            "'{pyhton}'",
            "{pyhton}",
        ),
    ],
)
def test_an_unknown_placeholder_names_the_key_path(
    tmp_path: Path, section: dict[str, Any], key: str, arg: str, field: str
) -> None:
    cfg = make_config(tmp_path, section)
    with pytest.raises(ConfigError) as info:
        build_specs(cfg)
    assert info.value.key == key
    assert str(info.value).startswith(f"config/config.yaml: {key}: {arg} uses {field}; ")
    assert "known placeholders: {python} {channel} {config}" in str(info.value)


@pytest.mark.parametrize("arg", ["{python:>800000000}", "{channel!r}", "{config:x}"])
def test_a_placeholder_takes_no_format_spec(tmp_path: Path, arg: str) -> None:
    cfg = make_config(tmp_path, {"bot": {"command": ["main.py", arg]}})
    with pytest.raises(ConfigError) as info:
        build_specs(cfg)
    assert info.value.key == "supervisor.bot.command[1]"
    assert "placeholders take no format spec or conversion" in str(info.value)


@pytest.mark.parametrize("arg", ["{python.__class__}", "{channel[0]}"])
def test_a_placeholder_is_a_name_not_an_expression(tmp_path: Path, arg: str) -> None:
    cfg = make_config(tmp_path, {"bot": {"command": ["main.py", arg]}})
    with pytest.raises(ConfigError) as info:
        build_specs(cfg)
    assert f"uses {arg}; known placeholders" in str(info.value)


@pytest.mark.parametrize("arg", ["{python", "python}"])
def test_a_malformed_template_is_a_config_error(tmp_path: Path, arg: str) -> None:
    cfg = make_config(tmp_path, {"bot": {"command": ["main.py", arg]}})
    with pytest.raises(ConfigError) as info:
        build_specs(cfg)
    assert info.value.key == "supervisor.bot.command[1]"
    assert "is not a valid template" in str(info.value)


def test_build_policy_maps_the_restart_settings(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "stop_timeout_sec": 4,
            "restart": {
                "mode": "always",
                "delay_sec": 2,
                "max_delay_sec": 8,
                "reset_after_sec": 90,
                "give_up_after": 3,
            },
            "hub": {"restart_bots": False},
        },
    )
    assert build_policy(cfg) == Policy(
        delay_sec=2.0,
        max_delay_sec=8.0,
        reset_after_sec=90.0,
        give_up_after=3,
        stop_timeout_sec=4.0,
        restart_always=True,
        hub_restart_bots=False,
        # The defaults of bot.logins_per_10s (Twitch's limit) and of the retries.
        logins_per_window=20,
        retry_parked_sec=120.0,
        retry_parked_max_sec=900.0,
    )
    assert build_policy(make_config(tmp_path)) == Policy(
        logins_per_window=20, retry_parked_sec=120.0, retry_parked_max_sec=900.0
    )


def test_hub_liveness_is_the_ready_check_three_times_per_watchdog_period(tmp_path: Path) -> None:
    def hub_of(**hub: Any) -> Any:
        return build_specs(make_config(tmp_path, {"hub": {"enabled": True, **hub}}))[0]

    off = hub_of()
    assert (off.liveness, off.watchdog_sec, off.liveness_every) == (None, 0.0, 0.0)
    by_pong = hub_of(liveness_sec=60)
    assert (by_pong.liveness, by_pong.watchdog_sec) == ("pong to hello + ping", 180.0)
    assert by_pong.liveness_every == 60.0
    by_db = hub_of(ready="db", liveness_sec=30)
    assert (by_db.liveness, by_db.watchdog_sec) == ("hub_state.ws_state 'connected'", 90.0)
    assert hub_of(ready="socket", liveness_sec=30).liveness == "pong to hello + ping"


@pytest.mark.parametrize(
    ("hub", "rule"),
    [
        ({"liveness_sec": 1}, "1 is too short (at least 3 s"),
        ({"liveness_sec": 60, "watchdog_sec": 30}, "cannot be used together with hub.watchdog_sec"),
    ],
)
def test_hub_liveness_refuses_what_cannot_work(
    tmp_path: Path, hub: dict[str, Any], rule: str
) -> None:
    cfg = make_config(tmp_path, {"hub": {"enabled": True, **hub}})
    with pytest.raises(ConfigError) as info:
        build_specs(cfg)
    assert "supervisor.hub.liveness_sec" in str(info.value)
    assert rule in str(info.value)


def test_system_log_liveness_watches_each_bots_own_file(tmp_path: Path) -> None:
    plain = build_specs(make_config(tmp_path))[0]
    assert (plain.liveness, plain.liveness_file) == (None, None)
    cfg = make_config(tmp_path, {"bot": {"liveness": "system-log"}})
    first, second = build_specs(cfg)
    assert first.liveness_file == "logs/broadcast/el_serda/system.log"
    assert second.liveness_file == "logs/broadcast/morthal_/system.log"
    assert first.liveness == "write to logs/broadcast/el_serda/system.log"
    # The default silence: 5 minutes; watched for writes, never checked on a timer.
    assert (first.watchdog_sec, first.liveness_every) == (300.0, 0.0)
    assert cfg.notes == ()
    quick = make_config(tmp_path, {"bot": {"liveness": "system-log", "liveness_silence_sec": 90}})
    assert build_specs(quick)[0].watchdog_sec == 90.0
    (note,) = quick.notes
    assert note.startswith("supervisor.bot.liveness_silence_sec is 90 s: KissBot writes")


def test_system_log_liveness_refuses_a_watchdog_too(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"bot": {"liveness": "system-log", "watchdog_sec": 30}})
    with pytest.raises(ConfigError) as info:
        build_specs(cfg)
    assert "supervisor.bot.liveness" in str(info.value)
    assert "cannot be used together with bot.watchdog_sec" in str(info.value)
