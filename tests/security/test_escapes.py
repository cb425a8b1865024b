"""A bot's process that leaves its process group and its parent (setsid, double
fork) is handed to the supervisor and ended (runtime/reaper.py): it can neither
outlive a stop nor keep the channel's lock. The escape runs as the bots' user."""

from __future__ import annotations

import os
import shlex
import signal
from pathlib import Path

from linewatch import wait_until
from process.harness import Supervisor, fleet_config, pid_alive

from .conftest import BOTS_UID, StartFleet

# The bot's process, before it execs the demo bot, leaves behind (as the bots' user)
# a `sleep` in a session of its own whose parent has exited: the grandchild of a
# double fork. It inherits every descriptor of the bot, the channel's lock too.
ESCAPE = (
    f"setpriv --reuid={BOTS_UID} --regid={BOTS_UID} --clear-groups "
    "setsid sh -c 'sleep 600 & echo $! > {out}' && exec \"$@\""
)


def escaping_fleet(channel: str, out: Path) -> dict[str, object]:
    doc = fleet_config([channel])
    bot = doc["supervisor"]["bot"]
    script = ESCAPE.format(out=shlex.quote(str(out)))
    bot["command"] = ["sh", "-c", script, "escaping-bot", *bot["command"]]
    return doc


def escaped_pid(out: Path) -> int:
    wait_until(lambda: out.exists() and out.read_text().strip() != "", what="the escapee")
    return int(out.read_text())


def test_a_double_forked_grandchild_ends_with_its_bot(
    start_fleet: StartFleet, workdir: Path
) -> None:
    out = workdir / "escaped.pid"  # the bots' user's
    sup = start_fleet(escaping_fleet("escape_chan", out))
    sup.wait_for(r"escape_chan: ready")
    escaped = escaped_pid(out)
    assert sup.ctl("stop", "escape_chan").returncode == 0
    # (Its command line may still be its shell's: it can be caught between fork and exec.)
    sup.wait_for(rf"supervisor: killed PID {escaped} \(")
    wait_until(lambda: not pid_alive(escaped), what="the escapee's end")


def test_the_lock_an_escapee_held_is_free_for_the_next_supervisor(
    start_fleet: StartFleet, workdir: Path
) -> None:
    out = workdir / "escaped.pid"
    sup = start_fleet(escaping_fleet("locked_chan", out))
    sup.wait_for(r"locked_chan: ready")
    escaped = escaped_pid(out)
    assert sup.stop() == 0
    # Before, it kept pids/locked_chan.lock: "another copy is already running", for ever.
    wait_until(lambda: not pid_alive(escaped), what="the escapee's end")
    out.unlink()
    again = Supervisor(workdir, sup.extra_args, sup.runtime_dir)
    try:
        again.wait_for(r"locked_chan: ready")
        assert not again.seen(r"another copy")
    finally:
        again.stop()


def test_an_on_failure_hooks_escaped_child_is_ended(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    out = tmp_path / "hook-escaped.pid"
    hook = f"setsid sh -c 'sleep 600 & echo $! > {shlex.quote(str(out))}'"
    sup = start_fleet(fleet_config(["hooked_chan"], supervisor={"on_failure": ["sh", "-c", hook]}))
    sup.wait_for(r"hooked_chan: ready")
    os.kill(sup.bot("hooked_chan")["pid"], signal.SIGKILL)  # a failure: the hook runs
    escaped = escaped_pid(out)
    # (Its command line may still be its shell's: it can be caught between fork and exec.)
    sup.wait_for(rf"supervisor: killed PID {escaped} \(")
    wait_until(lambda: not pid_alive(escaped), what="the escapee's end")
