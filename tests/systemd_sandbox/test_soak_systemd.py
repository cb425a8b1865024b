"""The soak on the systemd backend (``make soak``; markers ``soak`` and ``scale``).

Random faults on a fleet of transient units for ``KISSBOT_SOAK_SECONDS`` (one
hour by default; ``KISSBOT_SOAK_SEED`` replays a run), each followed by a wait
for the fleet to recover and a check of every process's restart count:

* ``kill-bot``: SIGKILL a bot (``systemctl kill``): 1 restart;
* ``kill-hub``: SIGKILL the hub: 1 restart for it, and 1 for every bot,
  restarted to reconnect once the new hub is ready;
* ``restart``: ``kissbotctl restart BOT``: 1 restart;
* ``stop-start``: ``kissbotctl stop BOT`` then ``start BOT``: none;
* ``admin-restart``: ``systemctl restart kissbot-bot@BOT``: 1 restart.

And the systemd side of the scale targets: 500 units started, status, stopped
(``KISSBOT_SCALE_UNITS``), with its figures printed.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter

import pytest

from faults.conftest import line_index
from linewatch import wait_until

from .fleet import Fleet, config, start

CHANNELS = ["soak_one", "soak_two", "soak_three", "soak_four"]
FAULTS = ("kill-bot", "kill-hub", "restart", "stop-start", "admin-restart")


def _settled(fleet: Fleet) -> bool:
    status = fleet.status()
    procs = [status["hub"], *status["bots"]]
    return all(p["state"] == "running" and p["pid"] for p in procs)


def _counts(fleet: Fleet) -> Counter[str]:
    status = fleet.status()
    counts = Counter({b["channel"]: b["restarts"] for b in status["bots"]})
    counts["hub"] = status["hub"]["restarts"]
    return counts


def _inject(fleet: Fleet, fault: str, bot: str, expected: Counter[str]) -> None:
    journal = fleet.journal
    mark = journal.mark()
    unit = f"kissbot-bot@{bot}.service"
    if fault == "kill-bot":
        fleet.sandbox.systemctl("kill", "-s", "KILL", unit)
        journal.wait_for(rf"{bot}: ready", since=line_index(journal, rf"{bot}: killed", mark))
        expected[bot] += 1
    elif fault == "kill-hub":
        fleet.sandbox.systemctl("kill", "-s", "KILL", "kissbot-hub.service")
        journal.wait_for(r"hub: killed by SIGKILL", since=mark)
        ready = line_index(journal, r"hub: ready", mark)
        for name in CHANNELS:
            journal.wait_for(rf"{name}: ready", since=ready)
            expected[name] += 1
        expected["hub"] += 1
    elif fault == "restart":
        assert fleet.ctl("restart", bot).returncode == 0
        expected[bot] += 1
    elif fault == "admin-restart":
        fleet.sandbox.systemctl("restart", unit)
        journal.wait_for(rf"{bot}: ready", since=mark)
        expected[bot] += 1
    else:
        assert fleet.ctl("stop", bot).returncode == 0
        assert fleet.ctl("start", bot).returncode == 0
    wait_until(lambda: _settled(fleet), what="every process running again", timeout=60)


@pytest.mark.soak
def test_soak_random_faults_systemd(fleet: Fleet) -> None:
    seconds = float(os.environ.get("KISSBOT_SOAK_SECONDS", "3600"))
    seed = int(os.environ.get("KISSBOT_SOAK_SEED", str(random.SystemRandom().randrange(2**32))))
    print(f"soak (systemd): seed {seed} (KISSBOT_SOAK_SEED={seed} replays it), {seconds:.0f} s")
    rng = random.Random(seed)
    doc = config(
        CHANNELS,
        supervisor={
            # Never parked, backoff short: every fault is recovered from, quickly.
            "restart": {"delay_sec": 0.1, "max_delay_sec": 1, "give_up_after": 0},
            "stop_timeout_sec": 2,
        },
    )
    start(fleet, doc)
    wait_until(lambda: _settled(fleet), what="the fleet up", timeout=60)
    expected: Counter[str] = Counter(dict.fromkeys(["hub", *CHANNELS], 0))
    injected: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fault, bot = rng.choice(FAULTS), rng.choice(CHANNELS)
        _inject(fleet, fault, bot, expected)
        injected[fault] += 1
        got = _counts(fleet)
        assert got == expected, (
            f"seed {seed}: after {sum(injected.values())} faults ({dict(injected)}), the last "
            f"{fault} on {bot}: restarts {dict(got)}, expected {dict(expected)}"
        )
        time.sleep(rng.uniform(0.2, 2.0))  # pacing between faults, not a wait
    print(f"soak (systemd): seed {seed}: {sum(injected.values())} faults {dict(injected)}")
    assert not fleet.journal.seen(r"Traceback|internal error"), f"seed {seed}"
    assert not fleet.journal.seen(r": parked|failed \d+ times"), f"seed {seed}"


@pytest.mark.scale
def test_500_units_start_answer_and_stop(fleet: Fleet) -> None:
    n = int(os.environ.get("KISSBOT_SCALE_UNITS", "500"))
    channels = [f"unit_{i:04d}" for i in range(n)]
    began = time.monotonic()
    start(fleet, config(channels, hub=False))

    def all_running() -> bool:
        answer = fleet.ctl("status", "--json")
        if answer.returncode != 0:
            return False  # not listening yet: it is still reading 500 units' state
        bots = json.loads(answer.stdout)["bots"]
        return len(bots) == n and all(b["state"] == "running" for b in bots)

    wait_until(all_running, what=f"{n} units running", timeout=900)
    started = time.monotonic() - began
    t = time.monotonic()
    fleet.status()
    status_ms = (time.monotonic() - t) * 1000
    main_pid = fleet.show("kissbot-supervisor.service", "MainPID")["MainPID"]
    proc_status = fleet.sandbox.run("cat", f"/proc/{main_pid}/status").stdout
    rss = next(int(x.split()[1]) for x in proc_status.splitlines() if x.startswith("VmRSS:")) * 1024
    t = time.monotonic()
    fleet.sandbox.systemctl("stop", "kissbot-supervisor", timeout=600)
    stopped = time.monotonic() - t
    print(
        f"\n{n} units (systemd): all running in {started:.1f} s; status {status_ms:.0f} ms "
        f"(kissbotctl in the sandbox); stop {stopped:.1f} s; supervisor RSS "
        f"{rss / 2**20:.1f} MiB"
    )
    report = os.environ.get("KISSBOT_SCALE_REPORT")
    if report:  # after the native table (make soak writes that one first)
        with open(report, "a") as f:
            f.write(
                "\n## The systemd backend (tests/systemd_sandbox/test_soak_systemd.py)\n\n"
                "| units | all running | status (kissbotctl) | stop | supervisor RSS |\n"
                "|---|---|---|---|---|\n"
                f"| {n} | {started:.1f} s | {status_ms:.0f} ms | {stopped:.1f} s | "
                f"{rss / 2**20:.1f} MiB |\n"
            )
    assert not fleet.journal.seen(r"not ready within|watchdog timeout|Traceback")
