"""A bot's child flooding the notify socket must not flood the supervisor's log."""

from __future__ import annotations

import contextlib
import math
import socket
import time
from pathlib import Path

from process.harness import fleet_config

from .conftest import StartFleet


def test_forged_notify_messages_are_counted_not_each_logged(
    start_fleet: StartFleet, workdir: Path
) -> None:
    sup = start_fleet(fleet_config(["flood_src"]), give=False)
    pid = int(sup.wait_for(r"flood_src: started \(PID (\d+)\)").group(1))
    sup.wait_for(r"flood_src: ready")
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    notify = next(v.split(b"=", 1)[1] for v in environ if v.startswith(b"NOTIFY_SOCKET="))
    began = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for _ in range(5000):
            with contextlib.suppress(BlockingIOError):  # a full queue: drop, go on
                s.sendto(b"READY=1\nSTATUS=forged", socket.MSG_DONTWAIT, notify.decode())
    elapsed = time.monotonic() - began
    sup.wait_for(r"notify: ignored a message from PID \d+: not a supervised process")
    sup.status()  # the loop turned: the queued datagrams were read meanwhile
    lines = sup.seen(r"notify: ignored a message")
    # One line, and one more per 10 s the flood lasted at most (whatever this
    # machine's speed): 5000 lines before.
    assert 1 <= len(lines) <= 2 + math.ceil(elapsed / 10)
    assert sup.bot("flood_src")["status_text"] != "forged"
