"""Faults injected into a systemd fleet: the supervisor as ``kissbot-supervisor.service`` in
the real systemd sandbox, the hub and bots as its transient units.

Already covered in ``tests/systemd_sandbox/test_backend.py`` and only extended
here: a crash with exit 1 (backoff), a hang caught by systemd's watchdog, the
park of a bot that exits 1 at start, adoption after the supervisor is SIGKILLed.
Faults are signals sent with ``systemctl kill`` (a real signal to the unit's main
process) and files in the workdir; logs of units are in the journal, not in
``logs/`` (the log-file faults are native only).
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest

from linewatch import wait_until
from process.harness import pid_alive
from systemd_sandbox.fleet import Fleet, config, per_channel_bot, start

from .conftest import (
    bots_by_channel,
    bytes_written,
    check_storm,
    line_index,
    socket_sender,
    storm,
    systemd_control,
)

MIB = 1024 * 1024


def kill(f: Fleet, name: str, sig: str) -> None:
    unit = "kissbot-hub.service" if name == "hub" else f"kissbot-bot@{name}.service"
    f.sandbox.systemctl("kill", "--kill-who=main", "-s", sig, unit)


def started_pid(f: Fleet, name: str, since: int = 0) -> int:
    return int(f.journal.wait_for(rf"{name}: started \(PID (\d+)\)", since=since).group(1))


def host_bots(f: Fleet) -> dict[str, list[int]]:
    """Bot processes in the sandbox (host PIDs), by channel."""
    return bots_by_channel(f.sandbox.namespace_pids())


def test_sigkill_of_a_bot_restarts_it_alone(fleet: Fleet) -> None:
    start(fleet, config(["victim_bot", "bystander"], hub=False))
    fleet.journal.wait_for(r"victim_bot: ready")
    fleet.journal.wait_for(r"bystander: ready")
    victim, other = fleet.bot("victim_bot")["pid"], fleet.bot("bystander")["pid"]
    mark = fleet.journal.mark()
    kill(fleet, "victim_bot", "KILL")
    fleet.journal.wait_for(
        r"victim_bot: killed by SIGKILL; restarting in 0\.3 s \(failure 1\)", since=mark
    )
    new = started_pid(fleet, "victim_bot", mark)
    fleet.journal.wait_for(r"victim_bot: ready", since=mark)
    bot = fleet.bot("victim_bot")
    assert (bot["state"], bot["pid"], bot["restarts"]) == ("running", new, 1)
    assert new != victim
    bystander = fleet.bot("bystander")
    assert (bystander["pid"], bystander["restarts"]) == (other, 0)


def test_sigkill_of_the_hub_restarts_the_bots_once_the_new_hub_is_ready(fleet: Fleet) -> None:
    start(fleet, config(["loyal_one", "loyal_two"]))
    for name in ("loyal_one", "loyal_two"):
        fleet.journal.wait_for(rf"{name}: ready")
    old = {b["channel"]: b["pid"] for b in fleet.status()["bots"]}
    mark = fleet.journal.mark()
    kill(fleet, "hub", "KILL")
    fleet.journal.wait_for(r"hub: killed by SIGKILL; restarting", since=mark)
    hub_ready = line_index(fleet.journal, r"hub: ready", mark)
    for name, pid in old.items():
        fleet.journal.wait_for(rf"{name}: restarting to reconnect to the new hub", since=mark)
        assert started_pid(fleet, name, hub_ready) != pid
        fleet.journal.wait_for(rf"{name}: ready", since=hub_ready)
    between = fleet.journal.lines[mark:hub_ready]
    assert not [x for x in between if re.search(r"loyal_\w+: (started|restarting)", x)]
    status = fleet.status()
    assert (status["hub"]["state"], status["hub"]["restarts"]) == ("running", 1)
    assert [(b["state"], b["restarts"]) for b in status["bots"]] == [("running", 1)] * 2
    assert {k: len(v) for k, v in host_bots(fleet).items()} == {"loyal_one": 1, "loyal_two": 1}


def _kill_the_supervisor_after_one_bot_restart(fleet: Fleet) -> tuple[int, dict[str, Any]]:
    """A fleet where scarred_bot was restarted once; the supervisor then SIGKILLed and
    back (systemd restarts it). Returns the journal mark and the bots as they were."""
    start(fleet, config(["steady_bot", "scarred_bot"]))
    fleet.journal.wait_for(r"steady_bot: ready")
    fleet.journal.wait_for(r"scarred_bot: ready")
    mark = fleet.journal.mark()
    kill(fleet, "scarred_bot", "KILL")
    started_pid(fleet, "scarred_bot", mark)
    fleet.journal.wait_for(r"scarred_bot: ready", since=mark)
    before = {b["channel"]: b for b in fleet.status()["bots"]}
    assert before["scarred_bot"]["restarts"] == 1
    mark = fleet.journal.mark()
    fleet.sandbox.systemctl("kill", "-s", "KILL", "kissbot-supervisor")
    for name in ("hub", "steady_bot", "scarred_bot"):
        fleet.journal.wait_for(rf"{name}: adopted, already running", since=mark)
    return mark, before


def test_sigkill_of_the_supervisor_adoption_keeps_one_copy_of_each_bot(fleet: Fleet) -> None:
    # (test_backend.py checks adoption itself; here after a restart, and the processes.)
    mark, before = _kill_the_supervisor_after_one_bot_restart(fleet)
    after = {b["channel"]: b for b in fleet.status()["bots"]}
    assert {k: (b["pid"], b["state"]) for k, b in after.items()} == {
        k: (b["pid"], "running") for k, b in before.items()
    }
    assert not [x for x in fleet.journal.lines[mark:] if re.search(r": started \(PID", x)]
    assert {k: len(v) for k, v in host_bots(fleet).items()} == {
        "steady_bot": 1,
        "scarred_bot": 1,
    }


def test_sigkill_of_the_supervisor_keeps_the_restart_counts(fleet: Fleet) -> None:
    _mark, before = _kill_the_supervisor_after_one_bot_restart(fleet)
    after = {b["channel"]: b["restarts"] for b in fleet.status()["bots"]}
    assert after == {k: b["restarts"] for k, b in before.items()}


def test_sigstop_of_a_bot_fires_the_watchdog_and_it_is_restarted(fleet: Fleet) -> None:
    # (test_backend.py covers a bot that hangs by itself; here it is frozen from outside.
    # systemd's SIGABRT stays pending on a stopped process: SIGKILL at TimeoutAbortSec.)
    doc = config(
        ["frozen_bot", "thawed_bot"],
        hub=False,
        supervisor={"bot": {"watchdog_sec": 1}, "stop_timeout_sec": 2},
    )
    start(fleet, doc)
    fleet.journal.wait_for(r"frozen_bot: ready")
    fleet.journal.wait_for(r"thawed_bot: ready")
    frozen, other = fleet.bot("frozen_bot")["pid"], fleet.bot("thawed_bot")["pid"]
    mark = fleet.journal.mark()
    kill(fleet, "frozen_bot", "STOP")
    fleet.journal.wait_for(r"frozen_bot: killed by SIG(ABRT|KILL) \(watchdog timeout\)", since=mark)
    new = started_pid(fleet, "frozen_bot", mark)
    fleet.journal.wait_for(r"frozen_bot: ready", since=mark)
    bot = fleet.bot("frozen_bot")
    assert (bot["state"], bot["pid"], bot["restarts"]) == ("running", new, 1)
    assert new != frozen
    thawed = fleet.bot("thawed_bot")
    assert (thawed["pid"], thawed["restarts"]) == (other, 0)


def test_exit_1_at_start_is_parked_and_the_others_are_unaffected(fleet: Fleet) -> None:
    # (test_backend.py checks the park and the unit; here the JSON and the other bots.)
    doc = config(
        ["revoked_bot", "fine_bot"],
        hub=False,
        bot_command=per_channel_bot({"revoked_bot": ["--exit-code", "1"]}),
        supervisor={"restart": {"delay_sec": 0.1, "give_up_after": 3}},
    )
    start(fleet, doc)
    fine = started_pid(fleet, "fine_bot")
    # In its own words, from its unit's journal (a guess only for a bot that said nothing).
    said = r"fatal start-up error \(demo --exit-code 1\)"
    fleet.journal.wait_for(rf'revoked_bot: exited 1 3 times within .* at start-up: ".*{said}"')
    bots = {b["channel"]: b for b in json.loads(fleet.ctl("status", "--json").stdout)["bots"]}
    assert (bots["revoked_bot"]["state"], bots["revoked_bot"]["pid"]) == ("failed", None)
    assert re.search(said, bots["revoked_bot"]["reason"])
    fleet.journal.wait_for(r"fine_bot: ready")
    assert (fleet.bot("fine_bot")["pid"], fleet.bot("fine_bot")["restarts"]) == (fine, 0)


def test_flood_goes_to_the_journal_never_through_the_supervisor(fleet: Fleet) -> None:
    # No watchdog here: whether journald drains a flood fast enough for a 1 s
    # watchdog is journald's pace on this machine's cores, not ours to promise (it
    # lagged on a loaded 2-core CI machine). What is ours: the output never passes
    # through the supervisor, which neither grows nor touches the flooder.
    doc = config(
        ["flood_bot", "quiet_bot"],
        hub=False,
        bot_command=per_channel_bot({"flood_bot": ["--flood"]}),
    )
    start(fleet, doc)
    fleet.journal.wait_for(r"flood_bot: ready")
    pid = fleet.bot("flood_bot")["pid"]
    ((host_pid,),) = [host_bots(fleet)["flood_bot"]]
    rss_before = fleet.status()["supervisor"]["rss_bytes"]
    written = bytes_written(host_pid)
    wait_until(
        lambda: bytes_written(host_pid) - written >= 32 * MIB, timeout=60, what="32 MiB more"
    )
    assert (
        "flood"
        in fleet.sandbox.run(
            "journalctl", "-u", "kissbot-bot@flood_bot.service", "-n", "1", "-o", "cat"
        ).stdout
    )
    assert not [x for x in fleet.journal.lines if "flood_bot: killed" in x]
    bot = fleet.bot("flood_bot")
    assert (bot["state"], bot["pid"], bot["restarts"]) == ("running", pid, 0)
    status = fleet.status()
    assert status["supervisor"]["rss_bytes"] - rss_before < 4 * MIB  # it never reads output
    assert fleet.bot("quiet_bot")["state"] == "running"


def greedy_bot_is_killed_and_restarted(fleet: Fleet, limits: dict[str, Any]) -> int:
    """Start greedy_bot (it eats 512 MiB) beside modest_bot under ``limits``; wait until
    the greedy one is OOM-killed and started again; modest_bot's PID."""
    doc = config(
        ["greedy_bot", "modest_bot"],
        hub=False,
        bot_command=per_channel_bot({"greedy_bot": ["--eat-mib", "512"]}),
        supervisor={**limits, "restart": {"delay_sec": 1}},
    )
    start(fleet, doc)
    modest = started_pid(fleet, "modest_bot")
    first = started_pid(fleet, "greedy_bot")
    mark = fleet.journal.mark()
    # cgroup v2 names the OOM kill (Result=oom-kill); v1 shows the SIGKILL only.
    fleet.journal.wait_for(
        r"greedy_bot: killed by SIGKILL( \(killed by the OOM killer\))?; restarting in 1\.0 s"
    )
    second = started_pid(fleet, "greedy_bot", mark)
    assert second != first
    return modest


def test_memory_limit_of_the_slice_oom_kills_the_greedy_bot_and_it_is_restarted(
    fleet: Fleet,
) -> None:
    # supervisor.systemd.memory_max applies to a transient slice (no unit file installed).
    (fleet.sandbox.units_dir / "kissbot.slice").unlink()
    fleet.sandbox.daemon_reload()
    modest = greedy_bot_is_killed_and_restarted(fleet, {"systemd": {"memory_max": "160M"}})
    journal = fleet.sandbox.journal("kissbot-bot@greedy_bot.service")
    assert "ate 64 MiB so far" in journal
    assert "ate 512 MiB" not in journal  # stopped at the limit, long before its goal
    assert fleet.show("kissbot.slice", "MemoryMax")["MemoryMax"] == str(160 * MIB)
    modest_now = fleet.bot("modest_bot")
    assert (modest_now["state"], modest_now["pid"], modest_now["restarts"]) == (
        "running",
        modest,
        0,
    )


def test_a_bot_over_its_own_memory_cap_is_oom_killed_and_restarted(fleet: Fleet) -> None:
    # bot.memory_max: the unit's own MemoryMax=, one bot's cap, not the fleet's.
    modest = greedy_bot_is_killed_and_restarted(fleet, {"bot": {"memory_max": "96M"}})
    assert fleet.show("kissbot-bot@greedy_bot.service", "MemoryMax")["MemoryMax"] == str(96 * MIB)
    assert "ate 512 MiB" not in fleet.sandbox.journal("kissbot-bot@greedy_bot.service")
    assert fleet.bot("modest_bot")["pid"] == modest


def test_stop_of_a_bot_that_ignores_sigterm_escalates_and_the_reply_says_so(
    fleet: Fleet,
) -> None:
    doc = config(
        ["stubborn_bot", "polite_bot"],
        hub=False,
        bot_command=per_channel_bot({"stubborn_bot": ["--ignore-sigterm"]}),
        supervisor={"stop_timeout_sec": 1},
    )
    start(fleet, doc)
    fleet.journal.wait_for(r"stubborn_bot: ready")
    fleet.journal.wait_for(r"polite_bot: ready")
    pid = fleet.bot("stubborn_bot")["pid"]
    result = fleet.ctl("stop", "stubborn_bot")
    assert result.returncode == 0, result
    assert re.fullmatch(
        rf"stubborn_bot: stopped \(PID {pid}\): did not stop on SIGTERM within the stop "
        r"timeout; killed by SIGKILL.*\n",
        result.stdout,
    )
    fleet.journal.wait_for(r"stubborn_bot: stopped \(killed by SIGKILL")
    assert fleet.bot("stubborn_bot")["state"] == "stopped"
    assert fleet.show("kissbot-bot@stubborn_bot.service", "ActiveState")["ActiveState"] in (
        "inactive",
        "failed",
        "",
    )
    assert fleet.bot("polite_bot")["state"] == "running"


@pytest.mark.parametrize("leftover", ["stale socket", "regular file"])
def test_hub_socket_path_taken_by_a_leftover(fleet: Fleet, leftover: str) -> None:
    path = fleet.workdir / "hub.sock"
    if leftover == "stale socket":
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(str(path))
    else:
        path.write_text("not a socket\n")
    doc = config(
        ["patient_bot", "patient_two"],
        supervisor={"restart": {"delay_sec": 0.1, "give_up_after": 3}},
    )
    start(fleet, doc)
    if leftover == "stale socket":
        fleet.journal.wait_for(r"hub: ready")
        for name in ("patient_bot", "patient_two"):
            fleet.journal.wait_for(rf"{name}: ready")
        assert fleet.journal.index_of(r"hub: ready") < fleet.journal.index_of(
            r"patient_bot: started"
        )
        wait_until(
            lambda: "removed stale socket" in fleet.sandbox.journal("kissbot-hub.service"),
            what="the hub's own word in its journal",
        )
        return
    fleet.journal.wait_for(r"hub: exited 1 3 times within .* at start-up")
    hub = fleet.status()["hub"]
    assert hub["state"] == "failed"
    # Its own words, from its unit's journal: where to look is in the reason itself.
    assert "hub.sock exists and is not a socket" in hub["reason"]
    assert "hub.sock exists and is not a socket; not removing it" in fleet.sandbox.journal(
        "kissbot-hub.service"
    )
    for name in ("patient_bot", "patient_two"):
        fleet.journal.wait_for(rf"{name}: ready")
    assert path.read_text() == "not a socket\n"


def test_a_parked_hub_starts_again_once_fixed_and_the_bots_reconnect(fleet: Fleet) -> None:
    doc = config(
        ["patient_bot", "patient_two"],
        supervisor={"restart": {"delay_sec": 0.1, "give_up_after": 3}},
    )
    start(fleet, doc)
    for name in ("patient_bot", "patient_two"):
        fleet.journal.wait_for(rf"{name}: ready")
    # The hub dies and its socket path is taken by a file: every new hub refuses it.
    path = fleet.workdir / "hub.sock"
    path.unlink()
    path.write_text("not a socket\n")
    kill(fleet, "hub", "KILL")
    fleet.journal.wait_for(r"hub: failed 3 times within .*; start it again once fixed")
    path.unlink()  # the operator removes the cause
    mark = fleet.journal.mark()
    result = fleet.ctl("start", "hub")
    assert result.returncode == 0, result.stdout
    restart = line_index(fleet.journal, r"patient_two: restarting to reconnect", mark)
    fleet.journal.wait_for(r"patient_two: ready", since=restart)


def test_a_parked_bot_starts_again_on_command(fleet: Fleet) -> None:
    # (Unlike the hub, nothing refers to a bot's unit: parked, it is unloaded, and the
    # start creates it afresh.)
    doc = config(
        ["revoked_bot"],
        bot_command=per_channel_bot({"revoked_bot": ["--exit-code", "1"]}),
        supervisor={"restart": {"delay_sec": 0.1, "give_up_after": 2}},
    )
    start(fleet, doc)
    fleet.journal.wait_for(r"revoked_bot: exited 1 2 times within .* at start-up")
    mark = fleet.journal.mark()
    fleet.ctl("start", "revoked_bot")  # it fails again, as it must: its answer is not the point
    started_pid(fleet, "revoked_bot", mark)
    fleet.journal.wait_for(r"revoked_bot: exited 1 2 times within .* at start-up", since=mark)
    assert not [x for x in fleet.journal.lines[mark:] if "systemd refused" in x]


def test_200_commands_from_10_concurrent_clients(fleet: Fleet) -> None:
    channels = ["storm_one", "storm_two", "storm_three", "storm_four"]
    start(fleet, config(channels, hub=False, supervisor={"stop_timeout_sec": 2}))
    for name in channels:
        fleet.journal.wait_for(rf"{name}: ready")
    send = socket_sender(systemd_control(fleet))
    check_storm(storm(send, channels), channels)
    answer = send({"cmd": "start", "names": ["all"]})
    assert all(r["ok"] for r in answer["results"]), answer
    status = fleet.status()
    assert [b["state"] for b in status["bots"]] == ["running"] * len(channels)
    found = host_bots(fleet)
    assert {k: len(v) for k, v in found.items()} == dict.fromkeys(channels, 1)
    assert all(pid_alive(p) for pids in found.values() for p in pids)
    assert not [x for x in fleet.journal.lines if re.search(r"internal error|Traceback", x)]
