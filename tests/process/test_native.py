"""The installed supervisor on real demo fleets: the native backend end to end."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml

from linewatch import wait_until

from .conftest import StartFleet
from .harness import check_preload, children_of, fleet_config, pid_alive, write_config

# The tests of exits, watchdog, readiness, the lock and the supervisor's death run
# twice: bots exec'd, and bots forked from the fork server (bot.preload).
both_starts = pytest.mark.parametrize("preload", [False, True], ids=["exec", "preload"])


def test_hub_is_ready_before_any_bot_starts(start_fleet: StartFleet) -> None:
    sup = start_fleet(fleet_config(["alpha_one", "beta_two", "gamma_three"], hub=True))
    for name in ("alpha_one", "beta_two", "gamma_three"):
        sup.wait_for(rf"{name}: ready")
    hub_ready = sup.index_of(r"hub: ready")
    first_bot = min(
        sup.index_of(rf"{n}: started") for n in ("alpha_one", "beta_two", "gamma_three")
    )
    assert hub_ready < first_bot
    status = sup.status()
    assert status["hub"]["state"] == "running"
    assert [b["state"] for b in status["bots"]] == ["running"] * 3
    assert sup.ctl("status").returncode == 0


@both_starts
def test_crash_is_restarted_after_the_backoff_delay(start_fleet: StartFleet, preload: bool) -> None:
    doc = fleet_config(
        ["crashy_bot", "steady_bot"],
        per_channel={"crashy_bot": ["--crash-after", "0.3"]},
        supervisor={"restart": {"delay_sec": 0.5, "give_up_after": 0}},
        preload=preload,
    )
    sup = start_fleet(doc)
    steady_pid = sup.wait_for(r"steady_bot: started \(PID (\d+)\)").group(1)
    sup.wait_for(r"crashy_bot: exited 1; restarting in 0\.5 s \(failure 1\)")
    t_exit = time.monotonic()
    mark = sup.mark()
    sup.wait_for(r"crashy_bot: started", since=mark)
    assert time.monotonic() - t_exit >= 0.45  # the delay was honoured
    sup.wait_for(r"crashy_bot: exited 1; restarting in 1\.0 s \(failure 2\)")  # doubled
    bot = sup.bot("crashy_bot")
    assert bot["restarts"] >= 1
    assert sup.bot("steady_bot")["pid"] == int(steady_pid)  # the others are untouched


@both_starts
def test_hung_bot_is_killed_by_the_watchdog_and_restarted(
    start_fleet: StartFleet, preload: bool
) -> None:
    doc = fleet_config(
        ["hangs_bot"],
        per_channel={"hangs_bot": ["--hang-after", "0.5"]},
        supervisor={"bot": {"watchdog_sec": 1}},
        preload=preload,
    )
    sup = start_fleet(doc)
    first = int(sup.wait_for(r"hangs_bot: started \(PID (\d+)\)").group(1))
    sup.wait_for(r"hangs_bot: watchdog timeout: no WATCHDOG=1 for 1\.0 s")
    mark = sup.mark()
    sup.wait_for(r"hangs_bot: killed by SIGKILL \(watchdog timeout")
    second = int(sup.wait_for(r"hangs_bot: started \(PID (\d+)\)", since=mark).group(1))
    assert second != first
    assert not pid_alive(first)


@both_starts
def test_exit_1_at_start_is_parked_with_a_reason(start_fleet: StartFleet, preload: bool) -> None:
    doc = fleet_config(
        ["revoked_bot", "fine_bot"],
        per_channel={"revoked_bot": ["--exit-code", "1"]},
        supervisor={"restart": {"delay_sec": 0.05, "give_up_after": 3}},
        preload=preload,
    )
    sup = start_fleet(doc)
    # Why, in the bot's own words: its last line (the demo's fatal error).
    sup.wait_for(r'revoked_bot: exited 1 3 times within .* at start-up: ".*fatal start-up error')
    bot = sup.bot("revoked_bot")
    assert bot["state"] == "failed"
    assert "fatal start-up error (demo --exit-code 1)" in bot["reason"]
    assert "token revoked?" not in bot["reason"]  # no guess where it said why
    assert sup.bot("fine_bot")["state"] in ("running", "starting")
    result = sup.ctl("status")
    assert result.returncode == 3, result
    assert "revoked_bot" in result.stdout
    # An operator's start is a fresh chance.
    mark = sup.mark()
    sup.ctl("start", "revoked_bot")
    sup.wait_for(r"revoked_bot: started", since=mark)


@both_starts
def test_stop_is_sticky(start_fleet: StartFleet, preload: bool) -> None:
    doc = fleet_config(["stopped_bot", "other_bot"], preload=preload)
    sup = start_fleet(doc)
    sup.wait_for(r"stopped_bot: ready")
    other = sup.wait_for(r"other_bot: started \(PID (\d+)\)")
    assert other
    result = sup.ctl("stop", "stopped_bot")
    assert result.returncode == 0, result
    sup.wait_for(r"stopped_bot: stopped \(killed by SIGTERM\)")
    # Things happen afterwards (a restart of another bot, a reload): still stopped.
    mark = sup.mark()
    sup.ctl("restart", "other_bot")
    sup.wait_for(r"other_bot: ready", since=mark)
    sup.signal(signal.SIGHUP)
    sup.wait_for(r"supervisor: reloaded", since=mark)
    bot = sup.bot("stopped_bot")
    assert bot["state"] == "stopped"
    assert bot["pid"] is None
    assert len(sup.seen(r"stopped_bot: started")) == 1
    assert sup.ctl("status", "stopped_bot").returncode == 0  # not wanted, so not missing


@both_starts
def test_shutdown_stops_bots_first_then_hub_and_escalates(
    start_fleet: StartFleet, preload: bool
) -> None:
    doc = fleet_config(
        ["stubborn_bot", "polite_bot"],
        hub=True,
        per_channel={"stubborn_bot": ["--ignore-sigterm"]},
        supervisor={"stop_timeout_sec": 1},
        preload=preload,
    )
    sup = start_fleet(doc)
    sup.wait_for(r"stubborn_bot: ready")
    pids = [sup.bot(n)["pid"] for n in ("stubborn_bot", "polite_bot")]
    hub_pid = sup.status()["hub"]["pid"]
    sup.signal(signal.SIGTERM)
    sup.wait_for(r"stubborn_bot: did not stop within 1\.0 s; sending SIGKILL")
    sup.wait_for(r"hub: stopped \(exited 0\)")
    assert sup.stop() == 0
    assert sup.index_of(r"polite_bot: stopped") < sup.index_of(r"hub: stopped")
    assert sup.index_of(r"stubborn_bot: stopped \(killed by SIGKILL\)") < sup.index_of(
        r"hub: stopped"
    )
    for pid in [*pids, hub_pid]:
        assert not pid_alive(pid)


def test_signals_during_the_last_clean_up_never_turn_a_clean_exit_into_a_kill(
    start_fleet: StartFleet,
) -> None:
    """An impatient caller sends SIGTERM again and again: the first one stops the fleet,
    the second kills what is left, and none of the rest may kill the supervisor
    between its loop's end and its exit (the loop used to put SIG_DFL back)."""
    sup = start_fleet(fleet_config(["patient_bot"]))
    sup.wait_for(r"patient_bot: ready")
    sup.signal(signal.SIGTERM)
    sup.wait_for(r"patient_bot: stopped")
    while sup.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            sup.proc.send_signal(signal.SIGTERM)
        time.sleep(0.001)  # a pace for the signals, not a wait for anything
    assert sup.proc.returncode == 0


@both_starts
def test_stale_flag_files_are_removed_before_a_start(
    start_fleet: StartFleet, tmp_path: Path, preload: bool
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    for flag in ("pid", "starting", "irc", "eventsub", "ready"):
        (pids / f"slow_bot.{flag}").write_text("stale\n")
    doc = fleet_config(
        ["slow_bot"],
        per_channel={"slow_bot": ["--ready-delay", "30"]},
        supervisor={"bot": {"ready": "file"}},
        preload=preload,
    )
    sup = start_fleet(doc)
    sup.wait_for(r"slow_bot: started")
    # The stale ready file must not count: the bot is still starting.
    assert not (pids / "slow_bot.ready").exists()
    assert not (pids / "slow_bot.irc").exists()
    assert sup.bot("slow_bot")["state"] == "starting"


@both_starts
def test_ready_file_marks_a_bot_ready(
    start_fleet: StartFleet, tmp_path: Path, preload: bool
) -> None:
    sup = start_fleet(
        fleet_config(["file_bot"], supervisor={"bot": {"ready": "file"}}, preload=preload)
    )
    sup.wait_for(r"file_bot: ready")
    assert (tmp_path / "pids" / "file_bot.ready").exists()


@both_starts
def test_a_second_supervisor_cannot_start_the_same_channel(
    start_fleet: StartFleet, tmp_path: Path, preload: bool
) -> None:
    doc = fleet_config(["single_bot"], preload=preload)
    first = start_fleet(doc)
    pid = first.bot("single_bot")["pid"] or int(
        first.wait_for(r"single_bot: started \(PID (\d+)\)").group(1)
    )
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    # Same KissBot root (workdir), another control socket and runtime dir.
    second = start_fleet(doc, workdir=tmp_path, runtime_dir=second_dir / "run")
    second.wait_for(r"single_bot: could not start: another copy of single_bot is already running")
    assert first.bot("single_bot")["pid"] == pid


def test_a_bot_started_outside_is_not_duplicated(start_fleet: StartFleet, tmp_path: Path) -> None:
    import subprocess
    import sys

    outside = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--channel", "outside_bot"],
        stdin=subprocess.DEVNULL,
    )
    try:
        (tmp_path / "pids").mkdir()
        (tmp_path / "pids" / "outside_bot.pid").write_text(f"{outside.pid}\n")
        sup = start_fleet(fleet_config(["outside_bot"]))
        sup.wait_for(
            rf"outside_bot: could not start: .*already running outside this supervisor "
            rf"\(PID {outside.pid}"
        )
    finally:
        outside.kill()
        outside.wait()


def test_output_flood_never_blocks_and_logs_rotate(start_fleet: StartFleet, tmp_path: Path) -> None:
    doc = fleet_config(
        ["flood_bot", "quiet_bot"],
        per_channel={"flood_bot": ["--flood"]},
        supervisor={"logs": {"max_bytes": 256 * 1024, "backups": 2}},
    )
    sup = start_fleet(doc)
    sup.wait_for(r"flood_bot: ready")
    logs = tmp_path / "logs" / "supervisor"

    def mtime(name: str) -> int | None:
        try:  # the file may be between a rename and its re-creation
            return (logs / name).stat().st_mtime_ns
        except FileNotFoundError:
            return None

    wait_until(lambda: mtime("flood_bot.log.2") is not None, what="two rotations")
    first = mtime("flood_bot.log.2")
    # The supervisor still answers and the flooder goes on (not blocked on a full pipe).
    assert sup.bot("flood_bot")["state"] == "running"
    wait_until(lambda: mtime("flood_bot.log.2") not in (None, first), what="the flood goes on")
    assert sup.ctl("stop", "flood_bot").returncode == 0
    names = sorted(p.name for p in logs.glob("flood_bot.log*"))
    assert names == ["flood_bot.log", "flood_bot.log.1", "flood_bot.log.2"]
    for name in names[1:]:
        assert (logs / name).stat().st_size <= 256 * 1024 + 4 * 65536  # one chunk over
    line = (logs / "flood_bot.log.1").read_text().splitlines()[5]
    assert line[:4].isdigit()
    assert line[10] == "T"  # each line time-stamped
    assert sup.bot("quiet_bot")["state"] == "running"


def test_reload_adds_and_removes_channels_and_leaves_others(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    doc = fleet_config(["keeper_bot", "leaver_bot"])
    sup = start_fleet(doc)
    keeper = int(sup.wait_for(r"keeper_bot: started \(PID (\d+)\)").group(1))
    sup.wait_for(r"leaver_bot: ready")
    doc["twitch"]["channels"] = ["keeper_bot", "newcomer_bot"]
    write_config(tmp_path, doc)
    result = sup.ctl("reload")
    assert result.returncode == 0, result
    sup.wait_for(r"newcomer_bot: ready")
    sup.wait_for(r"leaver_bot: stopped")
    names = [b["channel"] for b in sup.status()["bots"]]
    assert names == ["keeper_bot", "newcomer_bot"]
    assert sup.bot("keeper_bot")["pid"] == keeper


def test_invalid_config_on_reload_changes_nothing(start_fleet: StartFleet, tmp_path: Path) -> None:
    doc = fleet_config(["intact_bot"])
    sup = start_fleet(doc)
    pid = int(sup.wait_for(r"intact_bot: started \(PID (\d+)\)").group(1))
    doc["twitch"]["channels"] = ["intact_bot", "ab c"]
    write_config(tmp_path, doc)
    sup.signal(signal.SIGHUP)
    line = sup.wait_for(r"reload refused, nothing changed: .*").group(0)
    assert "config/config.yaml: twitch.channels[1]: 'ab c' is not a Twitch login" in line
    response = sup.request({"cmd": "reload"})
    assert response["ok"] is False
    assert "twitch.channels[1]" in response["error"]
    assert sup.bot("intact_bot")["pid"] == pid
    assert [b["channel"] for b in sup.status()["bots"]] == ["intact_bot"]


def test_bad_config_at_start_names_file_key_and_value(tmp_path: Path) -> None:
    import subprocess

    from .harness import SUPERVISOR

    write_config(tmp_path, {"twitch": {"channels": ["good_one", "../etc"]}})
    result = subprocess.run(
        [SUPERVISOR, "--workdir", str(tmp_path), "--non-interactive"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "kissbot-supervisor: config/config.yaml: twitch.channels[1]: '../etc' is not a "
        "Twitch login (4-25 of a-z, 0-9, _)"
    )
    assert not (tmp_path / "pids").exists()  # nothing written


def test_unknown_setting_flag_and_bad_value(tmp_path: Path) -> None:
    import subprocess

    from .harness import SUPERVISOR

    write_config(tmp_path, {"twitch": {"channels": ["good_one"]}})
    result = subprocess.run(
        [SUPERVISOR, "--workdir", str(tmp_path), "--restart-delay-sec=-3"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "command line: --restart-delay-sec: '-3' is out of range" in result.stderr


@both_starts
def test_supervisor_killed_leaves_no_orphans(tmp_path: Path, preload: bool) -> None:
    from .harness import Supervisor

    write_config(tmp_path, fleet_config(["orphan_bot", "orphan_two"], hub=True, preload=preload))
    sup = Supervisor(tmp_path)
    try:
        sup.wait_for(r"orphan_two: ready")
        sup.wait_for(r"orphan_bot: ready")
        check_preload(sup, preload)
        pids = [b["pid"] for b in sup.status()["bots"]] + [sup.status()["hub"]["pid"]]
        pids += list(children_of(sup.proc.pid))  # the fork server too
        os.kill(sup.proc.pid, signal.SIGKILL)
        sup.stop()
        wait_until(lambda: not any(pid_alive(p) for p in pids), what="PDEATHSIG kills")
    finally:
        sup.stop()


def test_unauthorised_peer_is_refused(start_fleet: StartFleet) -> None:
    if os.getuid() != 0:
        import pytest

        pytest.skip("needs root to run kissbotctl as another user")
    import tempfile

    # A runtime dir that others may traverse (pytest's tmp dirs are private).
    runtime = Path(tempfile.mkdtemp(prefix="kissbot-peer-"))
    os.chmod(runtime, 0o755)
    sup = start_fleet(fleet_config(["guarded_bot"]), runtime_dir=runtime / "run")
    sup.wait_for(r"guarded_bot: ready")
    # The socket's own mode stops strangers first...
    result = sup.ctl("status", user=65534)
    assert result.returncode == 1
    assert "permission denied" in result.stderr.lower()
    # ...and with the mode opened up, SO_PEERCRED still does.
    os.chmod(sup.runtime_dir, 0o755)
    os.chmod(sup.control, 0o666)
    result = sup.ctl("status", user=65534)
    assert result.returncode == 1
    assert "permission denied" in result.stderr.lower()
    assert sup.seen(r"control: refused a client .*UID 65534")


def test_config_is_read_as_kissbot_writes_it(start_fleet: StartFleet, tmp_path: Path) -> None:
    doc = fleet_config(["el_serda"])
    doc["twitch"].update({"client_id": "abc", "client_secret": "shh", "bot_id": "1"})
    doc["timeouts"] = {"ping": 30}
    doc["announcements"] = {"enabled": True}
    doc["eventsub"] = {"mode": "hub"}
    sup = start_fleet(doc)
    sup.wait_for(r"el_serda: ready")
    stored = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    assert stored == doc  # read, never rewritten


def test_bots_reconnect_by_restart_once_a_crashed_hub_is_back(start_fleet: StartFleet) -> None:
    doc = fleet_config(
        ["loyal_bot", "loyal_two"],
        hub=True,
        hub_extra=["--crash-after", "1"],
        supervisor={"restart": {"give_up_after": 0}},
    )
    sup = start_fleet(doc)
    first = int(sup.wait_for(r"loyal_bot: started \(PID (\d+)\)").group(1))
    sup.wait_for(r"loyal_bot: ready")
    crash = sup.wait_for(r"hub: exited 1; restarting").string
    mark = sup.index_of(re.escape(crash))
    sup.wait_for(r"hub: ready", since=mark)
    sup.wait_for(r"loyal_bot: restarting to reconnect to the new hub", since=mark)
    second = int(sup.wait_for(r"loyal_bot: started \(PID (\d+)\)", since=mark).group(1))
    assert second != first
    sup.wait_for(r"loyal_two: restarting to reconnect to the new hub", since=mark)
    # Bots kept running while the hub was down: the restart came after the hub was ready.
    assert sup.index_of(r"loyal_bot: restarting to reconnect") > mark


def test_children_keep_the_descriptor_limit_the_supervisor_was_given(tmp_path: Path) -> None:
    import resource

    from .harness import Supervisor

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 1024:
        import pytest

        pytest.skip(f"the hard descriptor limit ({hard}) leaves nothing to raise")
    write_config(tmp_path, fleet_config(["limited_bot"]))
    sup = Supervisor(tmp_path, nofile=1024)
    try:
        sup.wait_for(r"limited_bot: ready")

        def soft_limit(pid: int) -> str:
            limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
            return next(x for x in limits if x.startswith("Max open files")).split()[3]

        assert soft_limit(sup.proc.pid) == str(hard)  # raised for 4 descriptors per bot
        assert soft_limit(sup.bot("limited_bot")["pid"]) == "1024"  # the bot gets the original
    finally:
        sup.stop()


def test_malformed_yaml_at_start_names_line_and_column(tmp_path: Path) -> None:
    import subprocess

    from .harness import SUPERVISOR

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("twitch:\n  channels: [a, b\n")
    result = subprocess.run(
        [SUPERVISOR, "--workdir", str(tmp_path), "--non-interactive"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("kissbot-supervisor: config/config.yaml: line 3, column 1: ")
    assert "invalid YAML" in result.stderr


def test_a_command_that_cannot_run_is_reported_in_words(start_fleet: StartFleet) -> None:
    doc = fleet_config(
        ["missing_bot"],
        supervisor={
            "bot": {"command": ["/nonexistent/kissbot/main.py", "{channel}"], "ready": "none"},
            "restart": {"delay_sec": 0.05, "give_up_after": 2},
        },
    )
    sup = start_fleet(doc)
    sup.wait_for(r"missing_bot: cannot execute '/nonexistent/kissbot/main.py': No such file")
    sup.wait_for(r"missing_bot: failed 2 times within")
    bot = sup.bot("missing_bot")
    assert bot["state"] == "failed"
    assert "cannot execute" in bot["last_exit"]


def test_export_units_writes_static_units_for_the_config(tmp_path: Path) -> None:
    import subprocess

    from .harness import SUPERVISOR

    write_config(tmp_path, fleet_config(["static_one", "static_two"], hub=True))
    out = tmp_path / "units"
    result = subprocess.run(
        [SUPERVISOR, "export-units", str(out), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "kissbot-bot@.service",
        "kissbot-hub.service",
        "kissbot.slice",
        "kissbot.target",
    ]
    template = (out / "kissbot-bot@.service").read_text()
    assert "--channel %i" in template
    assert "static_one" not in template
    target = (out / "kissbot.target").read_text()
    assert "kissbot-bot@static_one.service" in target
    assert "kissbot-bot@static_two.service" in target


def test_only_a_process_itself_may_notify_for_it(start_fleet: StartFleet) -> None:
    import socket

    doc = fleet_config(
        ["honest_bot"],
        per_channel={"honest_bot": ["--ready-delay", "30"]},
        supervisor={"bot": {"watchdog_sec": 60}},
    )
    sup = start_fleet(doc)
    pid = int(sup.wait_for(r"honest_bot: started \(PID (\d+)\)").group(1))
    # Until the bot has exec'd, /proc shows the forked supervisor's environment.
    wait_until(lambda: b"demo" in Path(f"/proc/{pid}/cmdline").read_bytes(), what="the bot runs")
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in item
    )
    assert environ["WATCHDOG_USEC"] == "60000000"
    assert environ["WATCHDOG_PID"] == str(pid)  # the bot's own PID, set after fork
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1\nSTATUS=forged", environ["NOTIFY_SOCKET"])
    sup.wait_for(rf"notify: ignored a message from PID {os.getpid()}: not a supervised process")
    bot = sup.bot("honest_bot")
    assert bot["state"] == "starting"
    assert bot["status_text"] != "forged"
