"""The systemd backend against a real systemd 252: ``systemctl start kissbot-supervisor``.

The supervisor runs as the unit from ``units/`` (ExecStart pointed at this
checkout by a drop-in), drives the fleet as transient units over the system
bus, and is observed through its journal (``journalctl -f``, read as lines
come), ``kissbotctl`` and ``systemctl show``, all inside the sandbox.
"""

from __future__ import annotations

import re
import time

from demo_argv import demo_hub_command
from linewatch import wait_until

from .fleet import Fleet, bus_reply_limit, config, per_channel_bot, start


def test_systemctl_start_brings_up_the_hub_then_the_bots(fleet: Fleet) -> None:
    start(fleet, config(["alpha_bot", "beta_bot"]))
    for name in ("alpha_bot", "beta_bot"):
        fleet.journal.wait_for(rf"{name}: ready")
    assert fleet.journal.index_of(r"hub: ready") < fleet.journal.index_of(r"alpha_bot: started")
    status = fleet.status()
    assert status["backend"] == "systemd"
    assert [b["state"] for b in status["bots"]] == ["running", "running"]
    unit = fleet.show(
        "kissbot-bot@alpha_bot.service", "ActiveState", "After", "Slice", "Type", "OOMScoreAdjust"
    )
    assert unit["ActiveState"] == "active"
    # When memory runs out, a bot goes before the hub, and both before the supervisor.
    assert unit["OOMScoreAdjust"] == "500"
    assert fleet.show("kissbot-hub.service", "OOMScoreAdjust") == {"OOMScoreAdjust": "200"}
    assert "kissbot-hub.service" in unit["After"]
    assert unit["Slice"] == "kissbot.slice"
    assert unit["Type"] == "notify"
    assert fleet.ctl("status").returncode == 0
    # The bot's own output is in its unit's journal.
    journal = fleet.sandbox.journal("kissbot-bot@alpha_bot.service")
    assert "demo bot starting" in journal


def test_crash_is_restarted_with_backoff(fleet: Fleet) -> None:
    start(
        fleet,
        config(
            ["crashy_bot"], bot_command=per_channel_bot({"crashy_bot": ["--crash-after", "0.3"]})
        ),
    )
    first = int(fleet.journal.wait_for(r"crashy_bot: started \(PID (\d+)\)").group(1))
    fleet.journal.wait_for(r"crashy_bot: exited 1; restarting in 0\.3 s \(failure 1\)")
    mark = fleet.journal.mark()
    second = int(fleet.journal.wait_for(r"crashy_bot: started \(PID (\d+)\)", since=mark).group(1))
    assert second != first
    fleet.journal.wait_for(r"crashy_bot: exited 1; restarting in 0\.6 s \(failure 2\)")


def test_watchdog_kills_a_hung_bot_and_it_is_restarted(fleet: Fleet) -> None:
    doc = config(
        ["hung_bot"],
        bot_command=per_channel_bot({"hung_bot": ["--hang-after", "0.5"]}),
        supervisor={"bot": {"watchdog_sec": 1}},
    )
    start(fleet, doc)
    first = int(fleet.journal.wait_for(r"hung_bot: started \(PID (\d+)\)").group(1))
    fleet.journal.wait_for(r"hung_bot: killed by SIGABRT \(watchdog timeout\)")
    mark = fleet.journal.mark()
    second = int(fleet.journal.wait_for(r"hung_bot: started \(PID (\d+)\)", since=mark).group(1))
    assert second != first
    assert fleet.show("kissbot-bot@hung_bot.service", "WatchdogUSec")["WatchdogUSec"] == "1s"


def test_exit_1_at_start_is_parked_with_a_reason(fleet: Fleet) -> None:
    doc = config(
        ["revoked_bot", "fine_bot"],
        hub=False,
        bot_command=per_channel_bot({"revoked_bot": ["--exit-code", "1"]}),
        supervisor={"restart": {"delay_sec": 0.1, "give_up_after": 3}},
    )
    start(fleet, doc)
    # Why, in the bot's own words (its last line, from its unit's journal), and not
    # a guess: "token revoked?" is said only of a bot that printed nothing.
    said = r"fatal start-up error \(demo --exit-code 1\)"
    fleet.journal.wait_for(rf'revoked_bot: exited 1 3 times within .* at start-up: ".*{said}"')
    bot = fleet.bot("revoked_bot")
    assert bot["state"] == "failed"
    assert re.search(said, bot["reason"])
    assert "token revoked?" not in bot["reason"]
    # Parked, and visible as such to systemd's own tools (it used to vanish: "could
    # not be found"); systemd does not restart it by itself.
    unit = "kissbot-bot@revoked_bot.service"
    state = fleet.show(unit, "LoadState", "ActiveState", "Result")
    assert state == {"LoadState": "loaded", "ActiveState": "failed", "Result": "exit-code"}
    listed = fleet.sandbox.systemctl("list-units", "--failed", "--plain", "--no-legend").stdout
    assert unit in listed
    assert fleet.ctl("status").returncode == 3
    # A stop is no failure: the unit is cleared.
    assert fleet.ctl("stop", "revoked_bot").returncode == 0
    wait_until(
        lambda: fleet.show(unit, "ActiveState")["ActiveState"] == "inactive",
        what="the stopped bot's unit cleared",
    )


def test_stop_is_sticky(fleet: Fleet) -> None:
    start(fleet, config(["stopped_bot", "other_bot"], hub=False))
    fleet.journal.wait_for(r"stopped_bot: ready")
    fleet.journal.wait_for(r"other_bot: ready")
    assert fleet.ctl("stop", "stopped_bot").returncode == 0
    assert fleet.show("kissbot-bot@stopped_bot.service", "ActiveState")["ActiveState"] in (
        "inactive",
        "",
    )
    mark = fleet.journal.mark()
    assert fleet.ctl("restart", "other_bot").returncode == 0
    fleet.sandbox.systemctl("reload", "kissbot-supervisor")
    fleet.journal.wait_for(r"supervisor: reloaded", since=mark)
    assert fleet.bot("stopped_bot")["state"] == "stopped"
    assert len([x for x in fleet.journal.lines if re.search(r"stopped_bot: started", x)]) == 1


def test_supervisor_killed_bots_keep_running_and_are_adopted(fleet: Fleet) -> None:
    start(fleet, config(["steady_bot", "steady_two"]))
    fleet.journal.wait_for(r"steady_two: ready")
    fleet.journal.wait_for(r"steady_bot: ready")
    before = {b["channel"]: b["pid"] for b in fleet.status()["bots"]}
    hub_pid = fleet.status()["hub"]["pid"]
    mark = fleet.journal.mark()
    fleet.sandbox.systemctl("kill", "-s", "KILL", "kissbot-supervisor")
    fleet.journal.wait_for(r"steady_bot: adopted, already running", since=mark)
    fleet.journal.wait_for(r"steady_two: adopted, already running", since=mark)
    fleet.journal.wait_for(r"hub: adopted, already running", since=mark)
    after = {b["channel"]: b["pid"] for b in fleet.status()["bots"]}
    assert after == before
    assert fleet.status()["hub"]["pid"] == hub_pid, "\n".join(fleet.journal.lines[mark:])
    assert not [x for x in fleet.journal.lines[mark:] if re.search(r": started \(PID", x)]
    assert all(b["state"] == "running" for b in fleet.status()["bots"])


def test_reload_adds_and_removes_channels(fleet: Fleet) -> None:
    doc = config(["keeper_bot", "leaver_bot"], hub=False)
    start(fleet, doc)
    keeper = int(fleet.journal.wait_for(r"keeper_bot: started \(PID (\d+)\)").group(1))
    fleet.journal.wait_for(r"leaver_bot: ready")
    doc["twitch"]["channels"] = ["keeper_bot", "newcomer_bot"]
    fleet.write_config(doc)
    assert fleet.ctl("reload").returncode == 0
    fleet.journal.wait_for(r"newcomer_bot: ready")
    fleet.journal.wait_for(r"leaver_bot: stopped")
    assert fleet.bot("keeper_bot")["pid"] == keeper
    units = fleet.sandbox.run("systemctl", "list-units", "kissbot-bot@*", "--no-legend").stdout
    assert "leaver_bot" not in units
    assert "newcomer_bot" in units


def test_stopping_the_supervisor_stops_bots_then_hub(fleet: Fleet) -> None:
    start(fleet, config(["first_bot", "second_bot"]))
    fleet.journal.wait_for(r"second_bot: ready")
    fleet.journal.wait_for(r"first_bot: ready")
    fleet.sandbox.systemctl("stop", "kissbot-supervisor")
    fleet.journal.wait_for(r"supervisor: stopped$")  # the journal may lag systemctl
    hub_stopped = fleet.journal.index_of(r"hub: stopped")
    assert fleet.journal.index_of(r"first_bot: stopped") < hub_stopped
    assert fleet.journal.index_of(r"second_bot: stopped") < hub_stopped
    units = fleet.sandbox.run("systemctl", "list-units", "kissbot-*", "--no-legend").stdout
    assert "kissbot-bot@" not in units
    assert "kissbot-hub" not in units


def test_token_reaches_the_unit_as_a_credential_and_nowhere_else(fleet: Fleet) -> None:
    from fixtures.kissbot_db import KissbotDb, write_key_file

    secret = "oauth-token-never-shown-4d2f8a"
    key = write_key_file(fleet.workdir)
    db = KissbotDb.create(fleet.workdir / "kissbot.db", key=key)
    db.add_account("serda_bot", "1001", secret, expires_at=time.time() + 86_400)
    doc = config(
        ["secret_bot"], hub=False, supervisor={"use_db": True, "bot": {"credential": True}}
    )
    start(fleet, doc)
    fleet.journal.wait_for(r"secret_bot: ready")
    unit = "kissbot-bot@secret_bot.service"
    journal = fleet.sandbox.journal(unit)
    assert f"credential: token present ({len(secret)} bytes)" in journal
    shown = fleet.sandbox.systemctl("show", "--all", unit).stdout
    assert secret not in shown
    assert secret not in fleet.sandbox.systemctl("show", "kissbot-supervisor").stdout
    assert secret not in fleet.ctl("status", "--json").stdout
    assert secret not in "\n".join(fleet.journal.lines)
    assert secret not in journal
    pid = fleet.bot("secret_bot")["pid"]
    environ = fleet.sandbox.run("cat", f"/proc/{pid}/environ").stdout
    assert secret not in environ
    assert "CREDENTIALS_DIRECTORY=/run/credentials/kissbot-bot@secret_bot.service" in environ
    mode = fleet.sandbox.run(
        "stat", "-c", "%a", "/run/kissbot-supervisor/credentials/secret_bot/token"
    ).stdout.strip()
    assert mode == "600"
    # Gone once the bot is stopped for good.
    assert fleet.ctl("stop", "secret_bot").returncode == 0
    gone = fleet.sandbox.run(
        "test", "-e", "/run/kissbot-supervisor/credentials/secret_bot", check=False
    )
    assert gone.returncode == 1


def test_channel_names_that_are_not_logins_never_reach_systemd(fleet: Fleet) -> None:
    fleet.write_config(config(["good_bot", "bad@bot.service"], hub=False))
    result = fleet.sandbox.systemctl("start", "kissbot-supervisor", check=False)
    assert result.returncode != 0
    units = fleet.sandbox.run("systemctl", "list-units", "--all", "kissbot-bot@*").stdout
    assert "bot.service.service" not in units
    assert "good_bot" not in units  # a bad config starts nothing
    journal = fleet.sandbox.journal("kissbot-supervisor.service")
    assert "twitch.channels[1]: 'bad@bot.service' is not a Twitch login" in journal


def test_bot_and_hub_units_are_hardened(fleet: Fleet) -> None:
    start(fleet, config(["hardened_bot"]))
    fleet.journal.wait_for(r"hardened_bot: ready")  # still works with every restriction
    for unit in ("kissbot-bot@hardened_bot.service", "kissbot-hub.service"):
        out = fleet.sandbox.run("systemd-analyze", "security", "--no-pager", unit).stdout
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
        assert match, out[-500:]
        assert float(match.group(1)) <= 2.0, f"{unit}: exposure {match.group(1)}"


def test_restarted_supervisor_stops_units_the_config_dropped(fleet: Fleet) -> None:
    doc = config(["kept_bot", "dropped_bot"], hub=False)
    start(fleet, doc)
    fleet.journal.wait_for(r"kept_bot: ready")
    fleet.journal.wait_for(r"dropped_bot: ready")
    kept = fleet.bot("kept_bot")["pid"]
    doc["twitch"]["channels"] = ["kept_bot"]
    fleet.write_config(doc)  # no reload: the supervisor dies before it would see it
    mark = fleet.journal.mark()
    fleet.sandbox.systemctl("kill", "-s", "KILL", "kissbot-supervisor")
    fleet.journal.wait_for(r"kept_bot: adopted, already running", since=mark)
    fleet.journal.wait_for(
        r"dropped_bot: kissbot-bot@dropped_bot.service is not in the config", since=mark
    )
    assert fleet.bot("kept_bot")["pid"] == kept
    fleet.sandbox.run(
        "systemctl", "is-active", "--quiet", "kissbot-bot@dropped_bot.service", check=False
    )
    state = fleet.show("kissbot-bot@dropped_bot.service", "ActiveState")["ActiveState"]
    assert state in ("inactive", "deactivating")


def test_slice_limits_from_the_config(fleet: Fleet) -> None:
    (fleet.sandbox.units_dir / "kissbot.slice").unlink()  # no unit file: a transient slice
    fleet.sandbox.daemon_reload()
    start(fleet, config(["sliced_bot"], hub=False, supervisor={"systemd": {"memory_max": "512M"}}))
    fleet.journal.wait_for(r"sliced_bot: ready")
    props = fleet.show("kissbot.slice", "MemoryMax", "ActiveState")
    assert props["MemoryMax"] == str(512 * 1024 * 1024)
    assert fleet.show("kissbot-bot@sliced_bot.service", "Slice")["Slice"] == "kissbot.slice"


def test_a_fleet_beyond_the_bus_reply_limit_starts_and_stops_whole(fleet: Fleet) -> None:
    # The system bus refuses a caller's calls past max_replies_per_connection
    # (128 stock; 6 here, so that 14 bots need more at once, as 300 bots did at
    # 128). A refused StopUnit left bots running after `systemctl stop`, and the
    # error reply of a refused GetAll killed the supervisor at start and at stop.
    channels = [f"crowd_bot_{i:02d}" for i in range(14)]
    with bus_reply_limit(fleet.sandbox, 6):
        start(fleet, config(channels))
        for name in channels:
            fleet.journal.wait_for(rf"{name}: ready")
        assert all(b["state"] == "running" for b in fleet.status()["bots"])
        fleet.sandbox.systemctl("stop", "kissbot-supervisor")
        # Every unit is gone by the time `systemctl stop` returns.
        units = fleet.sandbox.run("systemctl", "list-units", "kissbot-*", "--no-legend").stdout
        assert "kissbot-bot@" not in units
        assert "kissbot-hub" not in units
    fleet.journal.wait_for(r"supervisor: stopped$")
    text = "\n".join(fleet.journal.lines)
    assert "LimitsExceeded" not in text
    assert "Traceback" not in text
    assert "could not start" not in text
    assert len(re.findall(r"crowd_bot_\d+: stopped", text)) == len(channels)
    assert fleet.show("kissbot-supervisor.service", "Result")["Result"] == "success"


def test_systemctl_restart_of_the_supervisor_keeps_the_fleet(fleet: Fleet) -> None:
    # A package upgrade restarts the unit the same way (deb-systemd-invoke restart).
    start(fleet, config(["lasting_bot", "lasting_two"]))
    fleet.journal.wait_for(r"lasting_two: ready")
    fleet.journal.wait_for(r"lasting_bot: ready")
    before = fleet.pids()
    mark = fleet.journal.mark()
    fleet.sandbox.systemctl("restart", "kissbot-supervisor")
    fleet.journal.wait_for(r"supervisor: restarting \(a restart job of this unit\)", since=mark)
    fleet.journal.wait_for(r"lasting_bot: adopted, already running", since=mark)
    fleet.journal.wait_for(r"lasting_two: adopted, already running", since=mark)
    assert fleet.pids() == before
    # Neither the hub nor a bot was stopped or started again.
    assert not [
        x for x in fleet.journal.lines[mark:] if re.search(r"(hub|_bot|_two): (started|stopped)", x)
    ]


def test_systemctl_reload_fails_when_the_reload_is_refused(fleet: Fleet) -> None:
    doc = config(["reloaded_bot"], hub=False)
    start(fleet, doc)
    fleet.journal.wait_for(r"reloaded_bot: ready")
    (fleet.workdir / "config" / "config.yaml").write_text("twitch: [unclosed\n")
    refused = fleet.sandbox.run("systemctl", "reload", "kissbot-supervisor", check=False)
    assert refused.returncode != 0
    fleet.journal.wait_for(r"reload refused, nothing changed: config/config\.yaml")
    assert fleet.bot("reloaded_bot")["state"] == "running"
    doc["twitch"]["channels"] = ["reloaded_bot", "another_bot"]
    fleet.write_config(doc)
    assert fleet.sandbox.run("systemctl", "reload", "kissbot-supervisor").returncode == 0
    fleet.journal.wait_for(r"another_bot: ready")


def test_a_bot_parked_by_an_outage_runs_again_by_itself(fleet: Fleet) -> None:
    outage = fleet.workdir / "twitch-unreachable"
    outage.touch()
    said = "Cannot connect to host irc.chat.twitch.tv:6697 ssl:default"
    script = f'if [ -e "{outage}" ]; then echo "{said}" >&2; exit 1; fi; exec "$@"'
    doc = config(
        ["outage_bot"],
        hub=False,
        bot_command=["sh", "-c", script, "bot", *per_channel_bot({})],
        supervisor={
            "restart": {
                "delay_sec": 0.1,
                "give_up_after": 2,
                "retry_parked_sec": 1,
                "retry_parked_max_sec": 1,
            },
        },
    )
    start(fleet, doc)
    fleet.journal.wait_for(r"outage_bot: exited 1 2 times .*; trying again by itself in 1\.0 s")
    fleet.journal.wait_for(r"outage_bot: exited 1 again, when tried after being parked")
    # Why, in its own words, read back from its unit's journal.
    assert f'"{said}"' in fleet.bot("outage_bot")["reason"]
    outage.unlink()  # Twitch is back
    fleet.journal.wait_for(r"outage_bot: ready")
    assert fleet.bot("outage_bot")["state"] == "running"


def test_an_administrators_systemctl_restart_and_stop_of_a_bot_are_respected(
    fleet: Fleet,
) -> None:
    # systemctl restart of a bot's unit used to leave it stopped ("Job canceled",
    # wanted false, "killed by SIGTERM by itself"): the supervisor took the stop
    # half for the bot's own exit and cancelled the start half.
    start(fleet, config(["admin_bot", "other_bot"], hub=False))
    fleet.journal.wait_for(r"admin_bot: ready")
    fleet.journal.wait_for(r"other_bot: ready")
    unit = "kissbot-bot@admin_bot.service"
    old = fleet.bot("admin_bot")["pid"]
    mark = fleet.journal.mark()
    fleet.sandbox.systemctl("restart", unit)  # fails if the job is cancelled
    fleet.journal.wait_for(r"admin_bot: stopped by the service manager", since=mark)
    fleet.journal.wait_for(r"admin_bot: started by the service manager", since=mark)
    fleet.journal.wait_for(r"admin_bot: ready", since=mark)
    bot = fleet.bot("admin_bot")
    assert bot["state"] == "running"
    assert bot["pid"] not in (None, old)
    assert bot["restarts"] == 1
    assert not fleet.journal.seen(r"admin_bot: .*by itself")

    mark = fleet.journal.mark()
    fleet.sandbox.systemctl("stop", unit)
    fleet.journal.wait_for(r"admin_bot: stopped by the service manager", since=mark)
    bot = fleet.bot("admin_bot")
    assert (bot["state"], bot["pid"]) == ("stopped", None)
    assert "stopped by the service manager" in (bot["reason"] or "")
    assert fleet.show(unit, "ActiveState")["ActiveState"] in ("inactive", "")
    # A stopped transient unit is gone from systemd (nothing to systemctl start):
    # kissbotctl start makes it afresh.
    mark = fleet.journal.mark()
    assert fleet.ctl("start", "admin_bot").returncode == 0
    fleet.journal.wait_for(r"admin_bot: ready", since=mark)
    assert fleet.bot("admin_bot")["state"] == "running"
    assert fleet.bot("other_bot")["pid"] is not None


def test_a_supervisor_killed_while_it_stops_the_fleet_leaves_nothing_running(
    fleet: Fleet,
) -> None:
    # systemctl stop, and the supervisor dies before it has stopped its fleet
    # (SIGKILL at TimeoutStopSec=, the OOM killer): the stop used to report
    # success with bots and the hub still running. A bot that ignores SIGTERM
    # holds the supervisor's stop (its stop timeout) while it is killed.
    doc = config(
        ["stubborn_bot", "meek_bot"],
        bot_command=per_channel_bot({"stubborn_bot": ["--ignore-sigterm"]}),
        supervisor={"stop_timeout_sec": 5},
    )
    start(fleet, doc)
    fleet.journal.wait_for(r"stubborn_bot: ready")
    fleet.journal.wait_for(r"meek_bot: ready")
    mark = fleet.journal.mark()
    fleet.sandbox.systemctl("stop", "--no-block", "kissbot-supervisor")
    fleet.journal.wait_for(r"meek_bot: stopped", since=mark)  # stubborn_bot holds it now
    fleet.sandbox.systemctl("kill", "-s", "KILL", "kissbot-supervisor")
    deadline = time.monotonic() + 30
    while fleet.show("kissbot-supervisor.service", "ActiveState")["ActiveState"] not in (
        "inactive",
        "failed",  # killed: the stop says so
    ):
        assert time.monotonic() < deadline, "the supervisor's unit never stopped"
        time.sleep(0.2)  # a state of systemd's, polled: no event reaches the test
    units = fleet.sandbox.systemctl(
        "list-units", "--no-legend", "--plain", "--state=active,activating,deactivating",
        "kissbot-bot@*", "kissbot-hub.service",
    ).stdout  # fmt: skip
    assert units.strip() == "", units
    journal = fleet.sandbox.journal("kissbot-supervisor.service")
    assert "stop-leftovers: the supervisor had left 2 units running" in journal, journal


def test_a_unit_systemd_could_not_set_up_says_so_in_words(fleet: Fleet) -> None:
    # An executable whose #! names no interpreter: systemd's child exits 203
    # (EXEC) and the program never runs. "exited 203" sent operators looking
    # for a bug in the bot.
    script = fleet.workdir / "broken_bot.sh"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    doc = config(
        ["unset_bot"],
        hub=False,
        bot_command=[str(script), "{channel}"],
        supervisor={"restart": {"delay_sec": 0.1, "give_up_after": 2}},
    )
    start(fleet, doc)
    fleet.journal.wait_for(r"unset_bot: exited 203 \(203/EXEC: the unit was not set up, systemd")
    bot = fleet.bot("unset_bot")
    assert "203/EXEC: the unit was not set up, systemd could not execute the program" in (
        bot["last_exit"] or ""
    )


def test_a_parked_hub_stays_parked_when_bots_start(fleet: Fleet) -> None:
    # Bots' units wanted the hub (Wants=): every bot start had systemd start the
    # parked hub again (still loaded: the running bots' units refer to it), which
    # then failed (243/CREDENTIALS: its token file was gone), hid the real reason,
    # and held the bots' start jobs behind it.
    doc = config(
        ["lone_bot"],
        supervisor={
            "restart": {"delay_sec": 0.1, "give_up_after": 2},
            "hub": {"restart_bots": False},
        },
    )
    doc["supervisor"]["hub"]["command"] = demo_hub_command("--crash-after", "1")
    start(fleet, doc)
    fleet.journal.wait_for(r"lone_bot: ready")
    fleet.journal.wait_for(r"hub: failed 2 times within")
    parked = hub_starts(fleet)
    mark = fleet.journal.mark()
    assert fleet.ctl("restart", "lone_bot").returncode == 0
    fleet.journal.wait_for(r"lone_bot: ready", since=mark)
    # systemd would have started the hub before the bot (After=): it says so by now.
    assert hub_starts(fleet) == parked, "the parked hub was started again"
    assert fleet.status()["hub"]["state"] == "failed"


def hub_starts(fleet: Fleet) -> int:
    """How many times systemd has started the hub's unit, from its journal."""
    out = fleet.sandbox.run("journalctl", "-u", "kissbot-hub.service", "-o", "cat", "--no-pager")
    return len(re.findall(r"^Started kissbot-hub\.service", out.stdout, re.MULTILINE))


def test_a_wedged_hub_unit_is_never_ready_and_no_bot_starts(fleet: Fleet) -> None:
    # The real hub binds its socket, then answers nothing while Twitch is down.
    # As a hardened unit (its own /tmp rules, no new privileges), the default
    # readiness (protocol: hello + ping, wait for the pong) still tells.
    doc = config(
        ["wedge_bot"],
        supervisor={"hub": {"start_timeout_sec": 5}, "stop_timeout_sec": 1},
    )
    doc["supervisor"]["hub"]["command"] = demo_hub_command("--wedge")
    del doc["supervisor"]["hub"]["ready"]  # the default: protocol
    start(fleet, doc)
    fleet.journal.wait_for(r"hub: not ready: the hub accepts connections on .* sent no pong")
    hub = fleet.status()["hub"]
    assert hub["state"] == "starting"
    assert "it is not serving bots" in hub["reason"]
    fleet.journal.wait_for(r"hub: not ready within 5(\.0)? s")
    assert not [x for x in fleet.journal.lines if re.search(r"hub: ready|wedge_bot: started", x)]


def test_a_bot_whose_system_log_falls_silent_is_killed_as_hung(fleet: Fleet) -> None:
    # bot.liveness: system-log under systemd: the supervisor watches the file the
    # bot writes in the workdir and stops the unit itself (no WatchdogSec=).
    every = ["--system-log-interval", "0.25"]
    doc = config(
        ["hangs_bot", "writes_bot"],
        hub=False,
        bot_command=per_channel_bot(
            {"hangs_bot": [*every, "--hang-after", "1"], "writes_bot": every}
        ),
        supervisor={"bot": {"liveness": "system-log", "liveness_silence_sec": 4}},
    )
    start(fleet, doc)
    first = int(fleet.journal.wait_for(r"hangs_bot: started \(PID (\d+)\)").group(1))
    fleet.journal.wait_for(r"writes_bot: ready")
    writes = fleet.bot("writes_bot")["pid"]
    fleet.journal.wait_for(
        r"hangs_bot: hung: logs/broadcast/hangs_bot/system\.log silent for 4\.0 s"
    )
    mark = fleet.journal.mark()
    second = int(fleet.journal.wait_for(r"hangs_bot: started \(PID (\d+)\)", since=mark).group(1))
    assert second != first
    assert fleet.show("kissbot-bot@hangs_bot.service", "WatchdogUSec")["WatchdogUSec"] in (
        "0",
        "infinity",
    )
    assert fleet.bot("writes_bot")["pid"] == writes  # a bot that writes is left alone


def test_a_unit_an_administrator_starts_after_our_stop_has_its_last_words(
    fleet: Fleet,
) -> None:
    # The supervisor stopped the hub (its exit was asked for); an administrator
    # starts it again with systemctl (the unit stays loaded: the bots' units refer
    # to it). That new life's failure is a failure: its reason quotes its own
    # last line, as any other's, not the bare exit of a stop.
    start(fleet, config(["hub_user"], supervisor={"restart": {"give_up_after": 1}}))
    fleet.journal.wait_for(r"hub: ready")
    mark = fleet.journal.mark()
    assert fleet.ctl("stop", "hub").returncode == 0
    fleet.journal.wait_for(r"hub: stopped", since=mark)
    fleet.sandbox.systemctl("start", "kissbot-hub.service")
    fleet.journal.wait_for(r"hub: started by the service manager", since=mark)
    fleet.journal.wait_for(r"hub: ready", since=mark)
    fleet.journal.wait_for(r"hub_user: ready", since=mark)  # the bot reconnected to it
    mark = fleet.journal.mark()
    fleet.sandbox.systemctl("kill", "-s", "KILL", "kissbot-hub.service")
    fleet.journal.wait_for(r"hub: failed 1 times within", since=mark)
    reason = fleet.status()["hub"]["reason"]
    assert re.search(r'last: killed by SIGKILL, ".*demo-hub INFO: .+"', reason), reason
