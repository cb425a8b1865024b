"""Start time of a native fleet with Twitch's login pacing on and off (``make bench-pacing``).

For 30, 100 and 300 demo bots (ready by sd_notify): the time from the
supervisor's start to every bot running, with ``bot.logins_per_10s`` at 20
(Twitch's limit for an unverified bot, the default) and at 0 (pacing off). The
figures go to docs/scale.md, between the markers below. With pacing on, the
floor is set by the window, not by the machine: 20 starts per 12 s (the
window is 2 s longer than Twitch's, see core/machine.py), so N bots need
(ceil(N / 20) - 1) x 12 s before the last one may start.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from process.harness import Supervisor, fleet_config, write_config

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "scale.md"
BEGIN = "<!-- pacing figures: tests/bench/pacing.py -->"
END = "<!-- end of pacing figures -->"
SIZES = (30, 100, 300)
LIMIT = 20
WINDOW_SEC = 12.0


def start_time(bots: int, logins: int) -> float:
    """Seconds from the supervisor's start until every bot runs."""
    channels = [f"pace_{i:04d}" for i in range(bots)]
    with tempfile.TemporaryDirectory(prefix="kissbot-pacing-") as tmp:
        workdir = Path(tmp)
        doc = fleet_config(channels, supervisor={"bot": {"logins_per_10s": logins}})
        write_config(workdir, doc)
        began = time.monotonic()
        sup = Supervisor(workdir)
        try:
            deadline = began + 60 + WINDOW_SEC * math.ceil(bots / LIMIT)
            while time.monotonic() < deadline:
                if sum(1 for _ in sup.seen(r": ready$")) >= bots:
                    return time.monotonic() - began
                time.sleep(0.05)  # a benchmark's poll: the time is what is measured
            raise SystemExit(f"{bots} bots, logins_per_10s {logins}: not all ready in time")
        finally:
            sup.stop(timeout=120)


def main() -> int:
    rows = []
    for bots in SIZES:
        on = start_time(bots, LIMIT)
        off = start_time(bots, 0)
        floor = (math.ceil(bots / LIMIT) - 1) * WINDOW_SEC
        rows.append(f"| {bots} | {on:.1f} s | {floor:.0f} s | {off:.1f} s |")
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            BEGIN,
            f"Native backend, demo bots ready by sd_notify, {os.cpu_count()} cores; "
            "from the supervisor's start to every bot running.",
            "",
            f"| bots | pacing on ({LIMIT} per 10 s) | its floor | pacing off |",
            "|---|---|---|---|",
            *rows,
            END,
        ]
    )
    text = DOC.read_text()
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), table, text, flags=re.S)
    else:
        text += "\n## Start time and Twitch's login limit (`make bench-pacing`)\n\n" + table + "\n"
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
