"""The soak: random faults on a native fleet for a long time (``make soak``; marker ``soak``).

One hour by default; ``KISSBOT_SOAK_SECONDS`` shortens it, ``KISSBOT_SOAK_SEED``
replays a run (the seed is printed first and named in every failure).

Every few seconds one fault, drawn from:

* ``kill-bot``: SIGKILL a bot; it counts 1 restart for that bot;
* ``freeze-bot``: SIGSTOP a bot (watchdog 1 s); the watchdog kills it: 1 restart;
* ``kill-hub``: SIGKILL the hub: 1 restart for the hub, and 1 for every bot, each
  restarted to reconnect once the new hub is ready;
* ``restart``: ``restart BOT`` command: 1 restart (an operator's restart counts,
  like systemd's NRestarts does not but the core's ``restarts`` does);
* ``stop-start``: ``stop BOT`` then ``start BOT``: no restart (a new start).

After each fault the run waits until the fleet has recovered (the lines that
say so, then every process running in status) and checks every process's
``restarts`` against the expected count, so a miscount names its fault.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from linewatch import wait_until
from process.harness import Supervisor, fleet_config, pid_alive

from .conftest import StartNative, line_index, rss_kib, state_letter

CHANNELS = ["soak_one", "soak_two", "soak_three", "soak_four"]
FAULTS = ("kill-bot", "freeze-bot", "kill-hub", "restart", "stop-start")


def _settled(sup: Supervisor) -> bool:
    status = sup.status()
    procs = [status["hub"], *status["bots"]]
    return all(p["state"] == "running" and p["pid"] and pid_alive(p["pid"]) for p in procs)


def _inject(sup: Supervisor, fault: str, bot: str, expected: Counter[str]) -> None:
    """Inject one fault, wait for the fleet to recover, and book the restarts it costs."""
    mark = sup.mark()
    if fault in ("kill-bot", "freeze-bot"):
        pid = sup.bot(bot)["pid"]
        if fault == "kill-bot":
            os.kill(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGSTOP)
            wait_until(lambda: not pid_alive(pid) or state_letter(pid) == "T", what="stopped")
            sup.wait_for(rf"{bot}: watchdog timeout", since=mark)
        sup.wait_for(rf"{bot}: ready", since=line_index(sup, rf"{bot}: killed by SIGKILL", mark))
        expected[bot] += 1
    elif fault == "kill-hub":
        os.kill(sup.status()["hub"]["pid"], signal.SIGKILL)
        ready = line_index(sup, r"hub: ready", mark)
        for name in CHANNELS:
            sup.wait_for(rf"{name}: ready", since=ready)
            expected[name] += 1
        expected["hub"] += 1
    elif fault == "restart":
        answer = sup.request({"cmd": "restart", "names": [bot]})
        assert answer["results"][0]["result"] == "restarted", answer
        expected[bot] += 1
    else:
        for cmd, result in (("stop", "stopped"), ("start", "started")):
            answer = sup.request({"cmd": cmd, "names": [bot]})
            assert answer["results"][0]["result"] == result, answer
    wait_until(lambda: _settled(sup), what="every process running again")


def _counts(sup: Supervisor) -> Counter[str]:
    status = sup.status()
    counts = Counter({b["channel"]: b["restarts"] for b in status["bots"]})
    counts["hub"] = status["hub"]["restarts"]
    return counts


@pytest.mark.soak
def test_soak_random_faults_native(native: StartNative, tmp_path: Path) -> None:
    seconds = float(os.environ.get("KISSBOT_SOAK_SECONDS", "3600"))
    seed = int(os.environ.get("KISSBOT_SOAK_SEED", str(random.SystemRandom().randrange(2**32))))
    print(f"soak: seed {seed} (KISSBOT_SOAK_SEED={seed} replays it), {seconds:.0f} s")
    rng = random.Random(seed)
    doc = fleet_config(
        CHANNELS,
        hub=True,
        supervisor={
            "bot": {"watchdog_sec": 1},
            # Never parked, backoff short: every fault is recovered from, quickly.
            "restart": {"delay_sec": 0.1, "max_delay_sec": 1, "give_up_after": 0},
            "stop_timeout_sec": 2,
        },
    )
    sup = native(doc)
    for name in CHANNELS:
        sup.wait_for(rf"{name}: ready")
    wait_until(lambda: _settled(sup), what="the fleet up")
    rss_start = rss_kib(sup.proc.pid)
    expected: Counter[str] = Counter(dict.fromkeys(["hub", *CHANNELS], 0))
    injected: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fault, bot = rng.choice(FAULTS), rng.choice(CHANNELS)
        _inject(sup, fault, bot, expected)
        injected[fault] += 1
        got = _counts(sup)
        assert got == expected, (
            f"seed {seed}: after {sum(injected.values())} faults ({dict(injected)}), the last "
            f"{fault} on {bot}: restarts {dict(got)}, expected {dict(expected)}"
        )
        # Pacing between faults ("every few seconds"), not a wait for anything.
        time.sleep(rng.uniform(0.2, 2.0))
    rss_end = rss_kib(sup.proc.pid)
    print(
        f"soak: seed {seed}: {sum(injected.values())} faults {dict(injected)}; restarts "
        f"{dict(_counts(sup))}; supervisor RSS {rss_start} -> {rss_end} KiB"
    )
    assert _settled(sup), f"seed {seed}"
    assert _counts(sup) == expected, f"seed {seed}"
    assert not sup.seen(r"Traceback|internal error"), f"seed {seed}"
    assert not [x for x in sup.lines if re.search(r": parked|failed \d+ times", x)]
    assert rss_end - rss_start < 8 * 1024, f"seed {seed}: RSS {rss_start} -> {rss_end} KiB"
