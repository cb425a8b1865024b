"""``kissbotctl`` with the systemd backend when the supervisor is down, in a real systemd 252.

The supervisor runs as ``kissbot-supervisor.service`` (see test_backend.py); it is
then killed with SIGKILL and its pending auto-restart cancelled with
``systemctl stop``, which leaves the transient hub and bot units running (they
are not in the supervisor's cgroup and nobody is left to stop them). ``status``
must then read the units from systemd, and ``logs`` the units' journal.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Callable

import linewatch
from linewatch import LineWatcher

from .fleet import BIN, TIMEOUT, Fleet, config, start

KISSBOTCTL = str(BIN / "kissbotctl")
OFFLINE_HEADLINE = "supervisor not running: state read from systemd"
# journalctl's short timestamp, "Jan 02 03:04:05 ", in front of every journal line.
SHORT_STAMP = re.compile(r"^[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d ")


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    linewatch.wait_until(predicate, what, TIMEOUT)  # the sandbox's own, longer bound


def kill_supervisor(fleet: Fleet) -> None:
    """SIGKILL the supervisor, then cancel systemd's restart of it: the fleet stays up.

    Cancelled once it waits to restart (its ExecStopPost= has run, with no stop
    job: the fleet is left for the next supervisor); a stop before that would be
    a stop of the whole fleet (see stop-leftovers)."""
    fleet.sandbox.systemctl("kill", "--signal=SIGKILL", "kissbot-supervisor")
    wait_until(
        lambda: fleet.show("kissbot-supervisor.service", "SubState")["SubState"] == "auto-restart",
        "the killed supervisor waiting to restart",
    )
    fleet.sandbox.systemctl("stop", "kissbot-supervisor")
    state = fleet.show("kissbot-supervisor.service", "ActiveState", "SubState")
    assert state["ActiveState"] in ("inactive", "failed"), state


def message_lines(stdout: str) -> list[str]:
    """kissbotctl's journal lines without their timestamp: what ``journalctl -o cat`` prints."""
    lines = stdout.splitlines()
    assert all(SHORT_STAMP.match(line) for line in lines), lines
    return [SHORT_STAMP.sub("", line, count=1) for line in lines]


def test_status_is_read_from_systemd_while_the_supervisor_is_down(fleet: Fleet) -> None:
    start(fleet, config(["offline_one", "offline_two"]))
    fleet.journal.wait_for(r"offline_one: ready")
    fleet.journal.wait_for(r"offline_two: ready")
    before = fleet.status()
    assert "source" not in before
    kill_supervisor(fleet)

    # Stopping the killed supervisor's unit stopped nothing else.
    for name in ("offline_one", "offline_two"):
        unit = fleet.show(f"kissbot-bot@{name}.service", "ActiveState", "MainPID")
        assert unit["ActiveState"] == "active", unit
    result = fleet.ctl("status", "--json")
    assert result.returncode == 3, result.stderr  # nothing supervises the fleet
    status = json.loads(result.stdout)
    assert status["source"] == "systemd"
    assert status["backend"] == "systemd"
    assert status["supervisor"]["running"] is False
    assert status["supervisor"]["unit"] == "kissbot-supervisor.service"
    assert [b["channel"] for b in status["bots"]] == ["offline_one", "offline_two"]
    for bot in status["bots"]:
        main_pid = int(fleet.show(bot["unit"], "MainPID")["MainPID"])
        assert bot["state"] == "running"
        assert bot["want"] is True
        assert bot["pid"] == main_pid
        assert bot["pid"] == next(b["pid"] for b in before["bots"] if b["name"] == bot["name"])
        assert bot["rss_bytes"] > 0
        assert bot["uptime_s"] > 0
        assert bot["status_text"] == f"joined #{bot['channel']}"
    assert status["hub"]["state"] == "running"
    assert status["hub"]["pid"] == before["hub"]["pid"]

    human = fleet.ctl("status")
    assert human.returncode == 3, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0] == OFFLINE_HEADLINE
    assert re.search(r"kissbot-supervisor\.service (inactive \(dead\)|failed)", lines[2]), lines
    assert re.search(r"^offline_one +running", human.stdout, re.MULTILINE)
    assert fleet.ctl("status", "offline_two", "--json").returncode == 3
    unknown = fleet.ctl("status", "nobody_here")
    assert unknown.returncode == 1
    assert "unknown channel 'nobody_here'" in unknown.stderr

    # A crash now: only the supervisor restarts its units, so the bot's unit stays
    # failed, visible, wanted and not running: exit 3.
    fleet.sandbox.systemctl("kill", "--signal=SIGKILL", "kissbot-bot@offline_two.service")

    def failed() -> bool:
        bots = json.loads(fleet.ctl("status", "--json").stdout)["bots"]
        return bool(bots[1]["state"] == "failed")

    wait_until(failed, "offline_two failed")
    after = fleet.ctl("status", "--json")
    assert after.returncode == 3
    crashed = json.loads(after.stdout)["bots"][1]
    assert crashed["pid"] is None
    assert crashed["want"] is True
    assert crashed["last_exit"] == "killed by SIGKILL"
    assert "the supervisor starts it again once it runs" in crashed["reason"]


def test_status_without_supervisor_nor_system_bus_is_an_error(fleet: Fleet) -> None:
    # Inside the sandbox PID 1 is systemd; a bus address that leads nowhere.
    result = fleet.sandbox.run(
        KISSBOTCTL,
        "status",
        check=False,
        env={"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/run/nothing-here"},
    )
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("kissbotctl: no supervisor at /run/kissbot-supervisor/control.sock")
    assert "systemd could not be read either: cannot connect to the system bus" in line


def test_logs_show_the_units_journal_with_and_without_the_supervisor(fleet: Fleet) -> None:
    start(fleet, config(["journal_bot"], hub=False))
    fleet.journal.wait_for(r"journal_bot: ready")
    unit = "kissbot-bot@journal_bot.service"
    # journald writes asynchronously: wait for the bot's last start-up line.
    wait_until(lambda: "joined #journal_bot" in fleet.sandbox.journal(unit), "the bot's lines")
    expected = fleet.sandbox.journal(unit).splitlines()  # journalctl -u UNIT -o cat
    assert any("demo bot starting" in line for line in expected)

    everything = fleet.ctl("logs", "journal_bot", "-n", "all")  # asks the supervisor
    assert everything.returncode == 0, everything.stderr
    assert message_lines(everything.stdout) == expected
    last = fleet.ctl("logs", "journal_bot", "-n", "3")
    assert message_lines(last.stdout) == expected[-3:]
    unknown = fleet.ctl("logs", "nobody_here")
    assert unknown.returncode == 1
    assert unknown.stderr == "kissbotctl: unknown process 'nobody_here' (known: journal_bot)\n"

    kill_supervisor(fleet)
    down = fleet.ctl("logs", "journal_bot", "-n", "all")  # no supervisor: PID 1 is systemd
    assert down.returncode == 0, down.stderr
    assert message_lines(down.stdout) == expected
    unknown = fleet.ctl("logs", "nobody_here")
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "kissbotctl: no journal entries for kissbot-bot@nobody_here.service\n"
    )

    # From the host: the sandbox's journal files, like journalctl -D.
    host = subprocess.run(
        [
            KISSBOTCTL,
            "--socket",
            "/nonexistent/control.sock",
            "logs",
            "journal_bot",
            "-n",
            "all",
            "--journal-dir",
            str(fleet.sandbox.journal_dir),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert host.returncode == 0, host.stderr
    assert message_lines(host.stdout) == expected


def test_logs_follow_the_journal(fleet: Fleet) -> None:
    start(fleet, config(["follow_bot"], hub=False))
    first = int(fleet.journal.wait_for(r"follow_bot: started \(PID (\d+)\)").group(1))
    fleet.journal.wait_for(r"follow_bot: ready")
    unit = "kissbot-bot@follow_bot.service"
    wait_until(lambda: "joined #follow_bot" in fleet.sandbox.journal(unit), "the bot's lines")
    proc = subprocess.Popen(
        [
            KISSBOTCTL,
            "--socket",
            "/nonexistent/control.sock",
            "logs",
            "follow_bot",
            "-f",
            "-n",
            "1",
            "--journal-dir",
            str(fleet.sandbox.journal_dir),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    out = LineWatcher(proc.stdout, "kissbotctl logs -f", TIMEOUT)
    try:
        out.wait_for(r".")  # the tail: one line
        mark = out.mark()
        assert mark == 1, out.lines
        assert fleet.ctl("restart", "follow_bot").returncode == 0
        second = fleet.bot("follow_bot")["pid"]
        assert second != first
        out.wait_for(rf"demo bot starting \(pid {second},", since=mark)
        out.wait_for(r"joined #follow_bot", since=mark)
        # PID 1's lines about the unit come too, as with journalctl -u.
        out.wait_for(rf"Started {re.escape(unit)} - KissBot bot for #follow_bot\.", since=mark)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
        out.join()
        proc.stdout.close()


def test_logs_of_several_units_come_interleaved_and_prefixed_from_the_journal(
    fleet: Fleet,
) -> None:
    start(fleet, config(["left_bot", "right_bot"], hub=False))

    def joined(name: str) -> bool:
        return f"joined #{name}" in fleet.sandbox.journal(f"kissbot-bot@{name}.service")

    for name in ("left_bot", "right_bot"):
        fleet.journal.wait_for(rf"{name}: ready")
        wait_until(functools.partial(joined, name), f"{name}'s lines")
    both = fleet.ctl("logs", "left_bot", "right_bot", "-n", "all")
    assert both.returncode == 0, both.stderr
    lines = both.stdout.splitlines()
    prefixes = {line.split(" | ", 1)[0].split()[-1] for line in lines if " | " in line}
    assert prefixes == {"left_bot", "right_bot"}, lines
    for name in ("left_bot", "right_bot"):
        assert any(re.search(rf"{name} *\| .*joined #{name}", line) for line in lines), lines
    grepped = fleet.ctl("logs", "all", "--grep", "joined #right")
    assert grepped.returncode == 0, grepped.stderr
    assert [line for line in grepped.stdout.splitlines() if line.strip()], grepped.stdout
    assert all("right_bot" in line for line in grepped.stdout.splitlines() if line.strip())
