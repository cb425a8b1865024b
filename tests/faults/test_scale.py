"""A native fleet of 1,000 demo bots (``make soak``; marker ``scale``).

``KISSBOT_SCALE_BOTS`` sets the size (1,000 by default). Pacing is off: this is
about the supervisor keeping up with its own fleet, not about Twitch. The run
prints its figures (time to all running, a status's answer time, a restart of
all, a stop, the supervisor's RSS) and, with ``KISSBOT_SCALE_REPORT=PATH``
(``make soak``), writes them there as Markdown (``docs/scale.md``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from linewatch import wait_until
from process.harness import fleet_config, request_on

from .conftest import StartNative, rss_kib

pytestmark = pytest.mark.scale

FALSE_KILLS = r"not ready within|watchdog timeout"


def test_a_thousand_bots_start_and_restart_with_no_false_kill(native: StartNative) -> None:
    n = int(os.environ.get("KISSBOT_SCALE_BOTS", "1000"))
    channels = [f"scale_{i:04d}" for i in range(n)]
    doc = fleet_config(channels, supervisor={"bot": {"watchdog_sec": 10}, "stop_timeout_sec": 10})
    began = time.monotonic()
    sup = native(doc)

    def all_running() -> bool:
        bots = sup.status()["bots"]
        return all(b["state"] == "running" for b in bots)

    wait_until(all_running, what=f"{n} bots running", timeout=600)
    started = time.monotonic() - began
    assert not sup.seen(FALSE_KILLS)
    assert [b["restarts"] for b in sup.status()["bots"]] == [0] * n

    t = time.monotonic()
    sup.status()
    status_ms = (time.monotonic() - t) * 1000

    mark = sup.mark()
    t = time.monotonic()
    answer = request_on(sup.control, {"cmd": "restart", "names": ["all"]}, timeout=900)
    restarted = time.monotonic() - t
    assert answer["ok"], str(answer)[:2000]
    wait_until(all_running, what=f"{n} bots running again", timeout=600)
    assert not sup.log.seen(FALSE_KILLS), [
        line for line in sup.lines[mark:] if "not ready" in line or "watchdog" in line
    ][:5]
    assert [b["restarts"] for b in sup.status()["bots"]] == [1] * n

    rss = rss_kib(sup.proc.pid) / 1024
    t = time.monotonic()
    assert sup.stop(timeout=120) == 0
    stopped = time.monotonic() - t
    figures = (
        f"{n} bots: all running in {started:.1f} s; status {status_ms:.0f} ms; "
        f"restart all {restarted:.1f} s; stop {stopped:.1f} s; supervisor RSS {rss:.1f} MiB"
    )
    print("\n" + figures)
    report = os.environ.get("KISSBOT_SCALE_REPORT")
    if report:
        Path(report).write_text(
            "# Scale: a native fleet of demo bots (`make soak`, tests/faults/test_scale.py)\n\n"
            "Pacing off, `bot.watchdog_sec: 10`; no bot killed as not ready or by its "
            "watchdog, at the start or at the `restart all`.\n\n"
            f"| bots | all running | status | restart all | stop | supervisor RSS |\n"
            f"|---|---|---|---|---|---|\n"
            f"| {n} | {started:.1f} s | {status_ms:.0f} ms | {restarted:.1f} s | "
            f"{stopped:.1f} s | {rss:.1f} MiB |\n"
        )
