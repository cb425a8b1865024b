"""The OOM killer in a memory-limited cgroup (a container) spares the supervisor.

A fleet fills its cgroup; one more bot's start runs it out of memory. The kernel
kills the process with the highest score, which without adjustments is the
largest: the supervisor (15 MiB against ~11 MiB per demo bot), whose death takes
a native fleet with it (PR_SET_PDEATHSIG). With ``oom_score_adj`` -900 for the
supervisor and +500 for the bots, a bot goes, and is restarted.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from linewatch import wait_until
from process.harness import fleet_config, pid_alive

from .conftest import StartNative

MIB = 1024 * 1024


class MemoryCgroup:
    """A cgroup of our own with the memory controller (v2, else v1), removed at the end."""

    def __init__(self) -> None:
        name = f"kissbot-oom-{uuid.uuid4().hex[:8]}"
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        v1 = [line.split(":", 2)[2] for line in lines if line.split(":")[1] == "memory"]
        if v1:
            self.path = Path("/sys/fs/cgroup/memory" + v1[0]) / name
            self.limit_file, self.usage_file = "memory.limit_in_bytes", "memory.usage_in_bytes"
            self.events_file, self.unlimited = "memory.oom_control", "-1"
        else:
            own = Path("/sys/fs/cgroup" + lines[0].split(":", 2)[2])
            if "memory" not in (own / "cgroup.subtree_control").read_text().split():
                (own / "cgroup.subtree_control").write_text("+memory")
            self.path = own / name
            self.limit_file, self.usage_file = "memory.max", "memory.current"
            self.events_file, self.unlimited = "memory.events", "max"
        self.path.mkdir()

    def wrapper(self) -> list[str]:
        """argv that moves itself into the cgroup, then execs the rest (same PID)."""
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh"]

    def usage(self) -> int:
        return int((self.path / self.usage_file).read_text())

    def limit(self, value: int | None) -> None:
        (self.path / self.limit_file).write_text(self.unlimited if value is None else str(value))

    def oom_kills(self) -> int:
        for line in (self.path / self.events_file).read_text().splitlines():
            key, _, count = line.partition(" ")
            if key == "oom_kill":
                return int(count)
        return 0

    def remove(self) -> None:
        self.limit(None)
        wait_until(
            lambda: not (self.path / "cgroup.procs").read_text().strip(),
            what="the cgroup empty",
        )
        self.path.rmdir()


@pytest.fixture
def cgroup() -> Iterator[MemoryCgroup]:
    try:
        group = MemoryCgroup()
        group.oom_kills()
    except OSError as e:
        pytest.skip(f"no memory cgroup of our own here: {e}")
    try:
        yield group
    finally:
        group.remove()


def oom_score_adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def test_the_oom_killer_takes_a_bot_not_the_supervisor(
    cgroup: MemoryCgroup, native: StartNative
) -> None:
    channels = ["oom_one", "oom_two", "oom_three", "oom_late"]
    sup = native(fleet_config(channels), wrapper=cgroup.wrapper())
    for name in channels:
        sup.wait_for(rf"{name}: ready")
    status = sup.status()
    assert {oom_score_adj(b["pid"]) for b in status["bots"]} == {500}
    # -900 needs CAP_SYS_RESOURCE (some containers drop it): then it says so and
    # stays where it was, below the bots all the same.
    if oom_score_adj(sup.proc.pid) != -900:
        assert oom_score_adj(sup.proc.pid) == 0
        sup.wait_for(r"supervisor: kept its OOM score adjustment")

    # Room for the fleet as it is, not for one more bot (a demo bot needs ~5 MiB of
    # its own; the cgroup's page cache, which the kernel could reclaim, is ~0.3 MiB).
    assert sup.request({"cmd": "stop", "names": ["oom_late"]})["ok"]
    cgroup.limit(cgroup.usage() + 2 * MIB)
    mark = sup.mark()
    sup.request({"cmd": "start", "names": ["oom_late"]})
    wait_until(lambda: cgroup.oom_kills() > 0, what="an OOM kill in the cgroup", timeout=60)
    sup.wait_for(r"killed by SIGKILL", since=mark)
    cgroup.limit(None)  # the container gets its memory back
    assert sup.proc.poll() is None
    assert pid_alive(sup.proc.pid)
    wait_until(
        lambda: all(b["state"] == "running" for b in sup.status()["bots"]),
        what="every bot running again",
        timeout=60,
    )
    assert os.path.exists(sup.control)
