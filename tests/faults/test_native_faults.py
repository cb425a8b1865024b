"""Faults injected into a native fleet (the installed supervisor, real demo processes).

Already covered in ``tests/process/test_native.py`` and only extended here: a
crash with exit 1 (backoff), a hang (``--hang-after``) caught by the watchdog,
parking of a bot that exits 1 at start, the flood's log rotation, escalation
on shutdown, and the PID check after the supervisor is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from demo_argv import demo_bot_command
from kissbot_supervisor.backends.native.logfiles import RETRY_AFTER
from linewatch import wait_until
from process.harness import Supervisor, fleet_config, pid_alive, write_config

from .conftest import (
    StartNative,
    bots_by_channel,
    bytes_written,
    check_storm,
    line_index,
    processes_in,
    rss_kib,
    socket_sender,
    state_letter,
    storm,
)

MIB = 1024 * 1024
# Bots exec'd, and bots forked from the fork server (bot.preload): the same faults.
both_starts = pytest.mark.parametrize("preload", [False, True], ids=["exec", "preload"])


def started_pid(sup: Supervisor, name: str, since: int = 0) -> int:
    return int(sup.wait_for(rf"{name}: started \(PID (\d+)\)", since=since).group(1))


@both_starts
def test_sigkill_of_a_bot_restarts_it_alone(native: StartNative, preload: bool) -> None:
    sup = native(fleet_config(["victim_bot", "bystander"], preload=preload))
    sup.wait_for(r"victim_bot: ready")
    sup.wait_for(r"bystander: ready")
    victim, other = sup.bot("victim_bot")["pid"], sup.bot("bystander")["pid"]
    mark = sup.mark()
    os.kill(victim, signal.SIGKILL)
    sup.wait_for(r"victim_bot: killed by SIGKILL; restarting in 0\.2 s \(failure 1\)", since=mark)
    new = started_pid(sup, "victim_bot", mark)
    sup.wait_for(r"victim_bot: ready", since=mark)
    bot = sup.bot("victim_bot")
    assert (bot["state"], bot["pid"], bot["restarts"]) == ("running", new, 1)
    assert new != victim
    assert bot["last_exit"] == "killed by SIGKILL"
    bystander = sup.bot("bystander")
    assert (bystander["pid"], bystander["restarts"]) == (other, 0)


def test_sigkill_of_the_hub_restarts_the_bots_once_the_new_hub_is_ready(
    native: StartNative, tmp_path: Path
) -> None:
    # (test_native.py covers a hub that exits 1; SIGKILL also leaves its socket behind.)
    sup = native(fleet_config(["loyal_one", "loyal_two"], hub=True))
    for name in ("loyal_one", "loyal_two"):
        sup.wait_for(rf"{name}: ready")
    status = sup.status()
    hub_pid = status["hub"]["pid"]
    old = {b["channel"]: b["pid"] for b in status["bots"]}
    mark = sup.mark()
    os.kill(hub_pid, signal.SIGKILL)
    sup.wait_for(r"hub: killed by SIGKILL; restarting", since=mark)
    hub_ready = line_index(sup, r"hub: ready", mark)
    for name, pid in old.items():
        sup.wait_for(rf"{name}: restarting to reconnect to the new hub", since=mark)
        new = started_pid(sup, name, hub_ready)
        sup.wait_for(rf"{name}: ready", since=hub_ready)
        assert new != pid
        assert not pid_alive(pid)
    # Nothing of the bots moved before the new hub was ready.
    between = sup.lines[mark:hub_ready]
    assert not [x for x in between if re.search(r"loyal_\w+: (started|restarting)", x)]
    status = sup.status()
    assert (status["hub"]["state"], status["hub"]["restarts"]) == ("running", 1)
    assert [(b["state"], b["restarts"]) for b in status["bots"]] == [("running", 1)] * 2
    hub_log = (tmp_path / "logs" / "supervisor" / "hub.log").read_text()
    assert "removed stale socket" in hub_log  # the killed hub's socket was in the way


@both_starts
def test_sigkill_of_the_supervisor_leaves_nothing_and_a_new_one_starts_cleanly(
    native: StartNative, tmp_path: Path, preload: bool
) -> None:
    doc = fleet_config(["orphan_one", "orphan_two"], hub=True, preload=preload)
    first = native(doc)
    for name in ("orphan_one", "orphan_two"):
        first.wait_for(rf"{name}: ready")
    # The hub and two bots (and the fork server), all in the workdir.
    assert len(processes_in(tmp_path)) == 3 + preload
    os.kill(first.proc.pid, signal.SIGKILL)
    assert first.stop() == -signal.SIGKILL
    # PR_SET_PDEATHSIG: every child dies with it; nothing runs in the workdir any more.
    wait_until(lambda: not processes_in(tmp_path), what="no process left in the workdir")
    pids = tmp_path / "pids"
    leftovers = {p.name for p in pids.iterdir()}
    assert {"supervisor.pid", "orphan_one.lock", "orphan_one.pid", "hub.lock"} <= leftovers
    assert (tmp_path / "run" / "control.sock").exists()  # a stale socket nobody listens on
    # A fresh supervisor starts on these leftovers as if they were not there.
    second = native(doc)
    for name in ("orphan_one", "orphan_two"):
        second.wait_for(rf"{name}: ready")
    assert not second.seen(r"could not start|already running|refus")
    status = second.status()
    assert status["hub"]["state"] == "running"
    assert [b["state"] for b in status["bots"]] == ["running"] * 2
    assert (pids / "supervisor.pid").read_text().strip() == str(second.proc.pid)
    if preload:  # a forked bot's /proc/PID/cmdline is the fork server's: no --channel
        bots = {b["pid"] for b in status["bots"]}
        assert bots < set(processes_in(tmp_path))
        assert len(processes_in(tmp_path)) == 4
    else:
        found = bots_by_channel(processes_in(tmp_path))
        assert {k: len(v) for k, v in found.items()} == {"orphan_one": 1, "orphan_two": 1}


@both_starts
def test_sigstop_of_a_bot_fires_its_watchdog_and_it_is_restarted(
    native: StartNative, preload: bool
) -> None:
    # (test_native.py covers a bot that hangs by itself; here it is frozen from outside.)
    doc = fleet_config(
        ["frozen_bot", "thawed_bot"], supervisor={"bot": {"watchdog_sec": 1}}, preload=preload
    )
    sup = native(doc)
    sup.wait_for(r"frozen_bot: ready")
    sup.wait_for(r"thawed_bot: ready")
    frozen, other = sup.bot("frozen_bot")["pid"], sup.bot("thawed_bot")["pid"]
    mark = sup.mark()
    os.kill(frozen, signal.SIGSTOP)
    wait_until(lambda: state_letter(frozen) == "T", what="the bot stopped")
    sup.wait_for(r"frozen_bot: watchdog timeout: no WATCHDOG=1 for 1\.0 s", since=mark)
    sup.wait_for(r"frozen_bot: killed by SIGKILL \(watchdog timeout", since=mark)
    new = started_pid(sup, "frozen_bot", mark)
    sup.wait_for(r"frozen_bot: ready", since=mark)
    assert not pid_alive(frozen)
    bot = sup.bot("frozen_bot")
    assert (bot["state"], bot["pid"], bot["restarts"]) == ("running", new, 1)
    assert bot["last_exit"].startswith("killed by SIGKILL (watchdog timeout")
    thawed = sup.bot("thawed_bot")
    assert (thawed["pid"], thawed["restarts"]) == (other, 0)  # its pings went on


def test_exit_1_at_start_is_parked_in_status_json_and_others_are_unaffected(
    native: StartNative,
) -> None:
    # (test_native.py checks the park itself and the human status; here the JSON and peers.)
    doc = fleet_config(
        ["revoked_bot", "fine_bot", "fine_two"],
        per_channel={"revoked_bot": ["--exit-code", "1"]},
        supervisor={"restart": {"delay_sec": 0.05, "give_up_after": 3}},
    )
    sup = native(doc)
    fine = {n: started_pid(sup, n) for n in ("fine_bot", "fine_two")}
    sup.wait_for(r"revoked_bot: exited 1 3 times within .* at start-up: ")
    result = sup.ctl("status", "--json")
    bots = {b["channel"]: b for b in json.loads(result.stdout)["bots"]}
    revoked = bots["revoked_bot"]
    assert (revoked["state"], revoked["pid"], revoked["last_exit"]) == ("failed", None, "exited 1")
    assert re.fullmatch(
        r'exited 1 3 times within \S+ s at start-up: ".*ERROR: fatal start-up error '
        r'\(demo --exit-code 1\)"',
        revoked["reason"],
    )
    for name, pid in fine.items():
        sup.wait_for(rf"{name}: ready")
        entry = sup.bot(name)
        assert (entry["state"], entry["pid"], entry["restarts"]) == ("running", pid, 0)


def test_flood_is_drained_the_flooder_keeps_pinging_and_supervisor_memory_stays_flat(
    native: StartNative, tmp_path: Path
) -> None:
    # (test_native.py checks the rotated files; here the flooder's liveness and our RSS.)
    doc = fleet_config(
        ["flood_bot", "quiet_bot"],
        per_channel={"flood_bot": ["--flood"]},
        supervisor={"bot": {"watchdog_sec": 1}, "logs": {"max_bytes": 64 * 1024, "backups": 1}},
    )
    sup = native(doc)
    sup.wait_for(r"flood_bot: ready")
    flood_pid = sup.bot("flood_bot")["pid"]
    backup = tmp_path / "logs" / "supervisor" / "flood_bot.log.1"
    wait_until(backup.exists, what="a first rotation")
    before, written = rss_kib(sup.proc.pid), bytes_written(flood_pid)
    # 256 MiB more through a 64 KiB pipe (4,000 rotations): a flooder blocked on a full
    # pipe would stop writing and, silent, be killed by its watchdog.
    wait_until(
        lambda: bytes_written(flood_pid) - written >= 256 * MIB, timeout=60, what="256 MiB more"
    )
    after = rss_kib(sup.proc.pid)
    assert after - before < 4 * 1024, (before, after)  # KiB: no growth with the volume
    assert not sup.seen(r"flood_bot: watchdog")
    bot = sup.bot("flood_bot")
    assert (bot["state"], bot["pid"], bot["restarts"]) == ("running", flood_pid, 0)
    assert sup.bot("quiet_bot")["state"] == "running"


def test_without_a_memory_cap_natively_a_greedy_bot_runs_on(native: StartNative) -> None:
    """Without bot.memory_max nothing stops a bot from growing natively (no cgroup,
    no RLIMIT_AS); status shows it."""
    doc = fleet_config(["greedy_bot"], per_channel={"greedy_bot": ["--eat-mib", "128"]})
    sup = native(doc)
    pid = started_pid(sup, "greedy_bot")
    wait_until(lambda: rss_kib(pid) >= 128 * 1024, what="128 MiB eaten")
    bot = sup.bot("greedy_bot")
    assert (bot["state"], bot["pid"], bot["restarts"]) == ("running", pid, 0)
    assert bot["rss_bytes"] >= 128 * MIB  # status shows it, nothing acts on it


def test_a_bot_over_its_memory_cap_is_killed_and_restarted_natively(native: StartNative) -> None:
    doc = fleet_config(
        ["greedy_bot", "modest_bot"],
        per_channel={"greedy_bot": ["--eat-mib", "512"]},
        supervisor={"bot": {"memory_max": "96M"}, "restart": {"delay_sec": 1}},
    )
    sup = native(doc)
    modest = started_pid(sup, "modest_bot")
    first = started_pid(sup, "greedy_bot")
    mark = sup.mark()
    sup.wait_for(
        r"greedy_bot: memory limit: \d+ MiB resident, over bot\.memory_max \(96 MiB\)",
        since=mark,
    )
    sup.wait_for(r"greedy_bot: killed by SIGKILL \(memory limit: .*\); restarting in 1\.0 s")
    second = started_pid(sup, "greedy_bot", mark)
    assert second != first
    assert not pid_alive(first)
    modest_now = sup.bot("modest_bot")
    assert (modest_now["state"], modest_now["pid"], modest_now["restarts"]) == (
        "running",
        modest,
        0,
    )


@both_starts
def test_stop_of_a_bot_that_ignores_sigterm_escalates_and_the_reply_says_so(
    native: StartNative, preload: bool
) -> None:
    doc = fleet_config(
        ["stubborn_bot", "polite_bot"],
        per_channel={"stubborn_bot": ["--ignore-sigterm"]},
        supervisor={"stop_timeout_sec": 1},
        preload=preload,
    )
    sup = native(doc)
    sup.wait_for(r"stubborn_bot: ready")
    pid = sup.bot("stubborn_bot")["pid"]
    answer = sup.request({"cmd": "stop", "names": ["stubborn_bot"]})
    (entry,) = answer["results"]
    assert (entry["ok"], entry["result"], entry["pid"]) == (True, "stopped", pid)
    assert "SIGKILL" in entry["message"], entry
    sup.wait_for(r"stubborn_bot: did not stop within 1\.0 s; sending SIGKILL")
    sup.wait_for(r"stubborn_bot: stopped \(killed by SIGKILL\)")
    assert not pid_alive(pid)
    bot = sup.bot("stubborn_bot")
    assert (bot["state"], bot["last_exit"]) == ("stopped", "killed by SIGKILL")
    # kissbotctl shows it on the result line.
    sup.ctl("start", "stubborn_bot")
    result = sup.ctl("stop", "stubborn_bot")
    assert result.returncode == 0, result
    assert re.fullmatch(r"stubborn_bot: stopped \(PID \d+\): .*SIGKILL.*\n", result.stdout)
    assert sup.bot("polite_bot")["state"] == "running"


@pytest.mark.parametrize("leftover", ["stale socket", "regular file"])
def test_hub_socket_path_taken_by_a_leftover(
    native: StartNative, tmp_path: Path, leftover: str
) -> None:
    path = tmp_path / "hub.sock"
    if leftover == "stale socket":
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(str(path))  # bound, never listening, closed: the file stays
    else:
        path.write_text("not a socket\n")
    doc = fleet_config(
        ["patient_bot", "patient_two"],
        hub=True,
        supervisor={"restart": {"delay_sec": 0.05, "give_up_after": 3}},
    )
    sup = native(doc)
    hub_log = tmp_path / "logs" / "supervisor" / "hub.log"
    if leftover == "stale socket":
        # The hub unlinks it and binds; the probe never took the dead file for a live hub.
        sup.wait_for(r"hub: ready")
        assert "removed stale socket" in hub_log.read_text()
        for name in ("patient_bot", "patient_two"):
            sup.wait_for(rf"{name}: ready")
        assert sup.index_of(r"hub: ready") < sup.index_of(r"patient_bot: started")
        return
    # A file that is not a socket is not the hub's to remove: it refuses, with one clear
    # sentence in its log, and is parked; the bots do not wait for a parked hub.
    sup.wait_for(r"hub: exited 1 3 times within .* at start-up")
    hub = sup.status()["hub"]
    assert hub["state"] == "failed"
    # In its own words: its last line says what is wrong.
    assert 'hub.sock exists and is not a socket; not removing it"' in hub["reason"]
    assert "hub.sock exists and is not a socket; not removing it" in hub_log.read_text()
    for name in ("patient_bot", "patient_two"):
        sup.wait_for(rf"{name}: ready")
    assert path.read_text() == "not a socket\n"
    # Once the operator removes it, a start brings the hub up and the bots reconnect.
    path.unlink()
    mark = sup.mark()
    assert sup.ctl("start", "hub").returncode == 0
    sup.wait_for(r"patient_bot: restarting to reconnect to the new hub", since=mark)
    sup.wait_for(r"patient_two: ready", since=line_index(sup, r"patient_two: restarting to", mark))


def test_logs_dir_unusable_supervision_goes_on_error_once_then_recovers(
    native: StartNative, tmp_path: Path
) -> None:
    (tmp_path / "logs").write_text("a file where the logs directory should be\n")
    doc = fleet_config(
        ["chatty_bot", "crashy_bot"],
        per_channel={
            "chatty_bot": ["--chat-interval", "0.02"],
            "crashy_bot": ["--crash-after", "0.5"],
        },
        supervisor={"restart": {"give_up_after": 0}},
    )
    sup = native(doc)
    log = tmp_path / "logs" / "supervisor" / "chatty_bot.log"
    error = sup.wait_for(
        rf"chatty_bot: cannot open {re.escape(str(log))}: Not a directory; "
        r"output is dropped until it works again"
    )
    assert error
    sup.wait_for(r"chatty_bot: ready")
    # Supervision goes on without logs: a crash is still seen and restarted.
    sup.wait_for(r"crashy_bot: exited 1; restarting")
    mark = sup.mark()
    sup.wait_for(r"crashy_bot: started", since=mark)
    (tmp_path / "logs").unlink()
    (tmp_path / "logs").mkdir()
    recovered = sup.wait_for(
        rf"chatty_bot: {re.escape(str(log))} is writable again \((\d+) lines were lost\)",
        timeout=RETRY_AFTER + 10,
    )
    assert int(recovered.group(1)) > 0
    assert len(sup.seen(r"chatty_bot: cannot ")) == 1  # once, not once per line
    wait_until(lambda: log.exists() and "chat tick" in log.read_text(), what="log lines again")
    assert sup.bot("chatty_bot")["restarts"] == 0


def _fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the filesystem is full."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return filler


def test_disk_full_for_log_files_error_once_and_recovery(
    native: StartNative, tmp_path: Path
) -> None:
    (tmp_path / "logs").mkdir()
    # A 1 MiB tmpfs on logs/, in a mount namespace of the supervisor's own: the host
    # never sees it, and it goes away with the supervisor's namespace.
    wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        'mount -n -t tmpfs -o size=1m tmpfs "$0/logs" && exec "$@"',
        str(tmp_path),
    ]
    doc = fleet_config(
        ["chatty_bot", "quiet_bot"], per_channel={"chatty_bot": ["--chat-interval", "0.02"]}
    )
    sup = native(doc, wrapper=wrapper)
    sup.wait_for(r"chatty_bot: ready")
    # The supervisor's view of the workdir, through its own root (its mount namespace).
    logs = Path(f"/proc/{sup.proc.pid}/root") / str(tmp_path).lstrip("/") / "logs"
    log = tmp_path / "logs" / "supervisor" / "chatty_bot.log"
    wait_until(lambda: "chat tick" in (logs / "supervisor" / "chatty_bot.log").read_text())
    assert not (tmp_path / "logs" / "supervisor").exists()  # the host's logs/ is untouched
    filler = _fill(logs)
    sup.wait_for(
        rf"chatty_bot: cannot write {re.escape(str(log))}: No space left on device; "
        r"output is dropped until it works again"
    )
    # That a retry on a disk still full neither claims recovery nor reports the
    # error again is tested with a fake clock (tests/process/test_logfiles.py).
    filler.unlink()
    recovered = sup.wait_for(
        rf"chatty_bot: {re.escape(str(log))} is writable again \((\d+) lines were lost\)",
        timeout=RETRY_AFTER + 10,
    )
    assert int(recovered.group(1)) > 0
    assert len(sup.seen(r"chatty_bot: cannot write")) == 1
    status = sup.status()
    assert [(b["state"], b["restarts"]) for b in status["bots"]] == [("running", 0)] * 2


def test_200_commands_from_10_concurrent_clients(native: StartNative, tmp_path: Path) -> None:
    channels = ["storm_one", "storm_two", "storm_three", "storm_four"]
    doc = fleet_config(channels, supervisor={"stop_timeout_sec": 2})
    sup = native(doc)
    for name in channels:
        sup.wait_for(rf"{name}: ready")
    results = storm(socket_sender(sup.control), channels)
    check_storm(results, channels)
    answer = sup.request({"cmd": "start", "names": ["all"]})
    assert all(r["ok"] for r in answer["results"]), answer
    status = sup.status()
    assert [b["state"] for b in status["bots"]] == ["running"] * len(channels)
    assert all(pid_alive(b["pid"]) for b in status["bots"])
    found = bots_by_channel(processes_in(tmp_path))
    assert {k: len(v) for k, v in found.items()} == dict.fromkeys(channels, 1)
    assert not sup.seen(r"internal error|Traceback")


@pytest.mark.parametrize("pause_sec", [6.0])
def test_a_paused_supervisor_kills_no_healthy_bot(native: StartNative, pause_sec: float) -> None:
    # Ctrl-Z then fg, a debugger, a VM pause: the supervisor is not running for a
    # while, its bots are. Their silence in that time is no evidence against them:
    # the pings they sent are read before any watchdog deadline is acted upon.
    channels = [f"paused_{i:02d}" for i in range(30)]
    doc = fleet_config(channels, supervisor={"bot": {"watchdog_sec": 2}})
    sup = native(doc)
    for name in channels:
        sup.wait_for(rf"{name}: ready")
    before = {b["channel"]: b["pid"] for b in sup.status()["bots"]}
    sup.signal(signal.SIGSTOP)
    wait_until(lambda: state_letter(sup.proc.pid) == "T", what="the supervisor stopped")
    time.sleep(pause_sec)  # the fault itself: a pause longer than the watchdog
    sup.signal(signal.SIGCONT)
    wait_until(lambda: state_letter(sup.proc.pid) != "T", what="the supervisor running")
    status = sup.status()  # answered after the first turn of the loop since SIGCONT
    assert {b["channel"]: b["pid"] for b in status["bots"]} == before
    assert [b["restarts"] for b in status["bots"]] == [0] * len(channels)
    assert not sup.log.seen(r"watchdog timeout")


def open_log_files(pid: int) -> int:
    """The supervisor's descriptors on process log files (``logs/supervisor/CH.log``;
    not its own, ``kissbot-supervisor.log``)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.endswith(".log") and not target.endswith("/kissbot-supervisor.log"):
                count += 1
    return count


def test_a_bot_removed_while_its_pipe_is_held_open_leaks_no_log_file(
    native: StartNative, tmp_path: Path
) -> None:
    # A removed bot's output pipe can outlive it (a daemonised child of its own
    # holds it; here this test does): its log file must stay open until the
    # pipe's end has been read, take what comes meanwhile, then be closed.
    sup = native(fleet_config(["kept_one", "kept_two", "gone_bot"]))
    for name in ("kept_one", "kept_two", "gone_bot"):
        sup.wait_for(rf"{name}: ready")
    assert open_log_files(sup.proc.pid) == 3
    holder = os.open(f"/proc/{sup.bot('gone_bot')['pid']}/fd/1", os.O_WRONLY)
    try:
        mark = sup.mark()
        write_config(tmp_path, fleet_config(["kept_one", "kept_two"]))
        assert sup.request({"cmd": "reload"})["ok"]
        sup.wait_for(r"gone_bot: stopped", since=mark)
        wait_until(lambda: len(sup.status()["bots"]) == 2, what="gone_bot out of the fleet")
        os.write(holder, b"late words from a descendant\n")
    finally:
        os.close(holder)
    wait_until(lambda: open_log_files(sup.proc.pid) == 2, what="gone_bot's log file closed")
    log = (tmp_path / "logs" / "supervisor" / "gone_bot.log").read_text()
    assert "late words from a descendant" in log


def test_a_sighup_storm_is_merged_and_starves_nothing(native: StartNative) -> None:
    # 100 SIGHUPs a second (a broken logrotate, a script in a loop): each reload
    # re-reads the config in a child process; run one by one they starved the loop,
    # status timed out and healthy bots missed their watchdog.
    channels = [f"stormy_{i}" for i in range(5)]
    sup = native(fleet_config(channels, supervisor={"bot": {"watchdog_sec": 3}}))
    for name in channels:
        sup.wait_for(rf"{name}: ready")
    pids = {b["channel"]: b["pid"] for b in sup.status()["bots"]}
    mark = sup.mark()
    began = time.monotonic()
    for _ in range(300):
        sup.signal(signal.SIGHUP)
        time.sleep(0.01)  # the storm's pace, not a synchronisation
    storm_sec = time.monotonic() - began
    assert {b["channel"]: b["pid"] for b in sup.status()["bots"]} == pids
    sup.wait_for(r"supervisor: one reload for \d+ SIGHUPs", since=mark)
    reloads = len([line for line in sup.lines[mark:] if "supervisor: reloaded:" in line])
    # At most one per second of storm, and the one after it.
    assert 1 <= reloads <= storm_sec + 2, (reloads, storm_sec)
    assert not sup.log.seen(r"watchdog timeout")


def _hard_limit_can_be_raised() -> bool:
    """Whether a process here may raise its hard descriptor limit (CAP_SYS_RESOURCE)."""
    import subprocess
    import sys

    probe = "import resource as r; r.setrlimit(r.RLIMIT_NOFILE, (4096, 4096))"
    wrapped = ["prlimit", "--nofile=1024:1024", "--", sys.executable, "-c", probe]
    return subprocess.run(wrapped, capture_output=True, check=False).returncode == 0


def test_a_fleet_too_big_for_the_descriptor_limit_is_refused_at_start_and_at_reload(
    native: StartNative, tmp_path: Path
) -> None:
    # 300 bots under a hard limit of 1024 died of EMFILE halfway through their
    # start. 5 descriptors per process and 160 for the supervisor: they need 1660.
    if _hard_limit_can_be_raised():
        pytest.skip("this process may raise its hard limit: the supervisor would raise it")
    limit = ["prlimit", "--nofile=1024:1024", "--"]
    sup = native(fleet_config([f"many_{i:03d}" for i in range(300)]), wrapper=limit)
    assert sup.proc.wait(timeout=20) == 2
    sup.wait_for(
        r"300 processes need about 1660 open files on the native backend .* may open only "
        r"1024 \(RLIMIT_NOFILE, hard limit 1024\); raise the limit .* or run at most 172 "
    )
    assert not sup.log.seen(r"started \(PID")
    # A fleet that fits starts; a reload that would not fit changes nothing.
    sup = native(fleet_config([f"few_{i}" for i in range(10)]), wrapper=limit)
    sup.wait_for(r"few_9: ready")
    pids = {b["channel"]: b["pid"] for b in sup.status()["bots"]}
    write_config(tmp_path, fleet_config([f"few_{i}" for i in range(300)]))
    answer = sup.request({"cmd": "reload"})
    assert not answer["ok"]
    assert "reload refused, nothing changed" in answer["error"]
    assert "twitch.channels: 300 processes need about 1660 open files" in answer["error"]
    assert {b["channel"]: b["pid"] for b in sup.status()["bots"]} == pids


def test_a_spawn_out_of_descriptors_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    # In this process: the native backend, its loop, and a descriptor limit just
    # above what is open. The spawn fails (EMFILE), and so does the clean-up after
    # it (scandir needs a descriptor too); neither may escape as an exception.
    import resource

    from kissbot_supervisor import core
    from kissbot_supervisor.backends.native.backend import NativeBackend, NativeOptions
    from kissbot_supervisor.runtime.log import Log
    from kissbot_supervisor.runtime.loop import Loop

    loop = Loop()
    events: list[core.Event] = []
    options = NativeOptions(
        workdir=tmp_path,
        runtime_dir=tmp_path / "run",
        logs_dir=tmp_path / "logs",
        log_max_bytes=1 << 20,
        log_backups=1,
        hub_socket=tmp_path / "hub.sock",
    )
    backend = NativeBackend(
        loop, options, events.append, Log(), lambda name, directory, resume: None
    )
    spec = core.ProcessSpec(name="starved_bot", argv=("true",), ready="none")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    fillers: list[int] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 8, hard))
        with contextlib.suppress(OSError):
            while True:  # every free slot taken...
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        os.close(fillers.pop())  # ...but one: the lock file gets it, the pipes none
        backend.execute(core.Spawn(spec))
        while not events:
            loop.run_once()
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        backend.close()
        loop.close()
    assert len(events) == 1
    failed = events[0]
    assert isinstance(failed, core.SpawnFailed)
    assert failed.name == "starved_bot"
    assert failed.error.startswith("Too many open files")


def test_a_new_supervisor_ends_what_a_killed_one_left_holding_the_locks(
    native: StartNative, tmp_path: Path
) -> None:
    # kill -9 of the supervisor: its bots die with it (PR_SET_PDEATHSIG), but a
    # bot's own child lives on, holding pids/CH.lock, and the next supervisor
    # parked the channel as "another copy ... already running".
    holder = ["sh", "-c", 'setsid sleep 300 & exec "$@"', "sh", *demo_bot_command()]
    doc = fleet_config(["left_bot", "plain_bot"], supervisor={"bot": {"command": holder}})
    first = native(doc)
    first.wait_for(r"left_bot: ready")
    first.wait_for(r"plain_bot: ready")
    os.kill(first.proc.pid, signal.SIGKILL)
    assert first.stop() == -signal.SIGKILL
    sleepers = [p for p in processes_in(tmp_path) if "sleep" in Path(f"/proc/{p}/comm").read_text()]
    assert len(sleepers) == 2  # one per bot, orphans now
    second = native(doc)
    second.wait_for(r"supervisor: killed 2 processes a previous supervisor of this workdir left")
    second.wait_for(r"left_bot: ready")
    second.wait_for(r"plain_bot: ready")
    assert not second.seen(r"already running|could not start")
    assert not any(pid_alive(p) for p in sleepers)
    assert [b["state"] for b in second.status()["bots"]] == ["running", "running"]
