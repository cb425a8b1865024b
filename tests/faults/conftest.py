"""Shared by the fault-injection tests: fleets on both backends, /proc scans, a command storm.

The native fleets are ``tests/process/harness.py``'s ``Supervisor``; the systemd
ones are ``tests/systemd_sandbox``'s ``fleet`` fixture (imported here, so this
directory gets its own session sandbox when both directories run: pytest looks
fixtures up per directory). Faults are real signals and real files; every wait
is on a log line, a socket answer or a state read from /proc or status.
"""

from __future__ import annotations

import os
import random
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from linewatch import wait_until
from process.harness import (
    TIMEOUT,
    Supervisor,
    check_preload,
    children_of,
    pid_alive,
    preloaded_demo,
    request_on,
    write_config,
)
from systemd_sandbox.conftest import clean_units, fleet, systemd_sandbox
from systemd_sandbox.fleet import Fleet

__all__ = ["clean_units", "fleet", "systemd_sandbox"]  # the sandbox fixtures, re-exported

StartNative = Callable[..., Supervisor]
Send = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture
def native(tmp_path: Path) -> Iterator[StartNative]:
    """Start the installed supervisor (native backend) on a config dict in ``tmp_path``.

    Stopped at teardown; whatever it had started must be gone then.
    """
    running: list[Supervisor] = []
    preloaded: list[Supervisor] = []

    def start(doc: dict[str, Any], *args: str, wrapper: Sequence[str] = ()) -> Supervisor:
        write_config(tmp_path, doc)
        sup = Supervisor(tmp_path, args, wrapper=wrapper)
        running.append(sup)
        if preloaded_demo(doc):
            preloaded.append(sup)
        return sup

    yield start
    for sup in preloaded:
        check_preload(sup, True)
    kids = [k for sup in running for k in children_of(sup.proc.pid)]
    for sup in running:
        sup.stop()
    wait_until(lambda: not any(pid_alive(k) for k in kids), what="children gone")


def line_index(watch: Any, pattern: str, since: int = 0) -> int:
    """Index of the first line matching ``pattern`` from ``since`` on, once it has come
    (a harness or journal watcher: lines repeat, so ``index_of`` may find an older one)."""
    watch.wait_for(pattern, since=since)
    rx = re.compile(pattern)
    return next(i for i in range(since, len(watch.lines)) if rx.search(watch.lines[i]))


# -- /proc ---------------------------------------------------------------------------


def _cmdline(pid: int | str) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def processes_in(workdir: Path) -> list[int]:
    """Live (non-zombie) processes whose working directory is ``workdir``: a demo
    fleet's hub and bots all run there, so this finds any survivor of it."""
    target = str(workdir.resolve())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == target and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def bots_by_channel(pids: Sequence[int]) -> dict[str, list[int]]:
    """Demo bot processes among ``pids`` (host PIDs), by their ``--channel``."""
    out: dict[str, list[int]] = {}
    for pid in pids:
        argv = _cmdline(pid)
        if "bot" in argv and "--channel" in argv and pid_alive(pid):
            channel = argv[argv.index("--channel") + 1]
            out.setdefault(channel, []).append(pid)
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for PID {pid}")


def bytes_written(pid: int) -> int:
    """What the process has written so far, to pipes and files alike (``wchar``)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no wchar for PID {pid}")


def state_letter(pid: int) -> str:
    """The /proc state of a process (R, S, T for stopped, Z...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


# -- the control socket ----------------------------------------------------------------


def socket_sender(path: Path) -> Send:
    """One JSON request per connection, as kissbotctl sends it; the answer line, parsed."""

    def send(obj: dict[str, Any]) -> dict[str, Any]:
        # Generous: a stop waits for the stop timeout, a restart for readiness.
        return request_on(path, obj, TIMEOUT * 3)

    return send


def systemd_control(f: Fleet) -> Path:
    """The control socket of the supervisor in the sandbox, reached from the host
    through its PID 1's root (the socket is in the sandbox's private /run)."""
    inside = f.status()["supervisor"]["control_socket"]
    return Path(f"/proc/{f.sandbox.pid1}/root{inside}")


def storm(
    send: Send, channels: Sequence[str], *, clients: int = 10, total: int = 200, seed: int = 5
) -> list[list[tuple[dict[str, Any], dict[str, Any]]]]:
    """``total`` mixed status/start/stop/restart requests from ``clients`` threads at once.

    Returns each client's (request, answer) pairs; an exception in any client
    (a refused connection, a timeout, a broken answer) fails the caller.
    """
    rng = random.Random(seed)
    plans: list[list[dict[str, Any]]] = [[] for _ in range(clients)]
    for i in range(total):
        cmd = rng.choice(("status", "start", "stop", "restart"))
        req: dict[str, Any] = {"cmd": cmd}
        if cmd != "status":
            req["names"] = [rng.choice(channels)]
        plans[i % clients].append(req)
    results: list[list[tuple[dict[str, Any], dict[str, Any]]]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    gate = threading.Barrier(clients)

    def client(index: int) -> None:
        try:
            gate.wait(TIMEOUT)
            for req in plans[index]:
                results[index].append((req, send(req)))
        except BaseException as e:  # reported by the caller, with the client's number
            errors.append(AssertionError(f"client {index}: {e!r}"))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 20)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a client never finished"
    return results


def check_storm(
    results: list[list[tuple[dict[str, Any], dict[str, Any]]]], channels: Sequence[str]
) -> None:
    """Every request answered, each answer well formed and about what was asked."""
    assert sum(len(r) for r in results) == 200
    for per_client in results:
        assert len(per_client) == 20  # no client starved: each got all its answers
        for req, answer in per_client:
            assert answer["ok"] is True, (req, answer)
            if req["cmd"] == "status":
                assert [b["channel"] for b in answer["status"]["bots"]] == list(channels)
            else:
                (entry,) = answer["results"]
                assert entry["name"] == req["names"][0], (req, answer)
                assert entry["result"], (req, answer)
