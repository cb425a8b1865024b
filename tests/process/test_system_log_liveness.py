"""bot.liveness: system-log with real demo bots that send no watchdog pings.

The demo bot writes ``logs/broadcast/CH/system.log`` as the real one does (every
``--system-log-interval`` s once ready); ``--hang-after`` stops everything, the
writes included. One fleet: a bot that hangs, a healthy one, and two whose file
is replaced (by a symlink, by a FIFO) while they run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from linewatch import wait_until
from process.harness import fleet_config

from .conftest import StartFleet

SILENCE = 4.0  # far above the demo's 0.25 s between lines, even on a loaded machine
EVERY = ["--system-log-interval", "0.25"]


def system_log(workdir: Path, name: str) -> Path:
    return workdir / "logs" / "broadcast" / name / "system.log"


def lines_in(path: Path) -> int:
    try:
        with open(path, "rb") as f:  # (a regular file: the test made nothing else there)
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_a_silent_system_log_is_a_hang_and_a_writing_bot_is_left_alone(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    names = ["hangs_one", "healthy_one", "linked_one", "fifo_one"]
    doc = fleet_config(
        names,
        per_channel={
            "hangs_one": [*EVERY, "--hang-after", "1"],
            "healthy_one": EVERY,
            "linked_one": EVERY,
            "fifo_one": EVERY,
        },
        supervisor={
            "bot": {"liveness": "system-log", "liveness_silence_sec": SILENCE},
            "restart": {"give_up_after": 0},
        },
    )
    sup = start_fleet(doc)
    # A short silence is allowed, and said: the real bot writes only every 60 s.
    sup.wait_for(r"supervisor\.bot\.liveness_silence_sec is 4 s: KissBot writes")
    for name in names:
        sup.wait_for(rf"{name}: ready")
    healthy_pid = sup.bot("healthy_one")["pid"]
    for name in ("linked_one", "fifo_one"):
        path = system_log(tmp_path, name)
        wait_until(lambda p=path: lines_in(p) > 0, what=f"{name}'s first line")  # type: ignore[misc]
    # Replaced while the bots run, as a hostile bot could: through the symlink the bot
    # writes on (to a file elsewhere); on the FIFO it blocks at its next line.
    elsewhere = tmp_path / "elsewhere.log"
    elsewhere.touch()
    linked = system_log(tmp_path, "linked_one")
    linked.unlink()
    linked.symlink_to(elsewhere)
    fifo = system_log(tmp_path, "fifo_one")
    fifo.unlink()
    os.mkfifo(fifo)

    sup.wait_for(r"hangs_one: hung: logs/broadcast/hangs_one/system\.log silent for 4\.0 s")
    sup.wait_for(r"linked_one: logs/broadcast/linked_one/system\.log: is a symlink")
    sup.wait_for(r"fifo_one: logs/broadcast/fifo_one/system\.log: is a FIFO")
    # Writes through the symlink went on, and count for nothing.
    wait_until(lambda: lines_in(elsewhere) >= 3, what="lines written through the symlink")
    sup.wait_for(r"linked_one: hung: logs/broadcast/linked_one/system\.log silent for 4\.0 s")
    sup.wait_for(r"fifo_one: hung: logs/broadcast/fifo_one/system\.log silent for 4\.0 s")
    # Killed as by a watchdog timeout (SIGKILL: a hung bot would not heed SIGTERM) and
    # started again, with the reason in status.
    sup.wait_for(r"hangs_one: killed by SIGKILL \(hung: logs/broadcast/hangs_one/system\.log")
    wait_until(lambda: sup.bot("hangs_one")["restarts"] >= 1, what="hangs_one restarted")
    last_exit = sup.bot("hangs_one")["last_exit"]
    assert last_exit.startswith("killed by SIGKILL (hung: logs/broadcast/hangs_one/system.log")
    # The FIFO's bot was stuck in open(); the supervisor never was: it answers.
    wait_until(lambda: sup.bot("fifo_one")["restarts"] >= 1, what="fifo_one restarted")
    # Meanwhile the healthy bot wrote many times the silence over, and was left alone.
    healthy_log = system_log(tmp_path, "healthy_one")
    wait_until(
        lambda: lines_in(healthy_log) >= 3 * SILENCE / 0.25,
        what="three silences' worth of lines from the healthy bot",
        timeout=60.0,
    )
    healthy = sup.bot("healthy_one")
    assert (healthy["pid"], healthy["restarts"], healthy["state"]) == (healthy_pid, 0, "running")
    assert not sup.seen(r"healthy_one: hung")
