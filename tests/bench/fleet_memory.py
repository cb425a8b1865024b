"""``make bench-memory``: a fleet's memory with bot.preload off and on.

For each fleet size, our supervisor (native backend) runs the same fleet of
heavyweight Python bots (``heavy_bot.py``, copied into the workdir as
``main.py``) twice: every bot exec'd (preload off, what every supervisor does),
then every bot forked from the fork server (preload on). Measured:

- the time from the launch until every bot is ready;
- Σ PSS and Σ USS of the bots (and of the fork server, when there is one)
  from ``/proc/PID/smaps_rollup``, once all are ready and again after
  ``--settle-seconds`` of chat activity (each bot allocates every 0.5 s and
  runs ``gc.collect()`` every 10 s: without ``gc.freeze()`` in the fork
  server, collections would turn its shared pages private).

PSS shares each page among the processes that map it: Σ PSS is the fleet's
real footprint. USS is what each bot alone holds (what its end would free).

The report goes to ``docs/fleet-memory.md`` and the raw figures to
``docs/fleet-memory.json``.

Usage: ``.venv/bin/python tests/bench/fleet_memory.py [--sizes 30,100]
[--settle-seconds 60] [--out docs/fleet-memory.md]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make ``bench`` importable from tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procstat
from bench.fleets import bench_channels, log
from bench.ours import Ours

HEAVY_BOT = Path(__file__).with_name("heavy_bot.py")
KIB = 1024


class HeavyFleet(Ours):
    """Our supervisor running heavyweight ``main.py`` bots, preload off or on."""

    def __init__(self, root: Path, channels: list[str], preload: bool) -> None:
        super().__init__(root, channels, restart_delay=0.5)
        self.preload = preload
        self.label = f"kissbot-supervisor (preload {'on' if preload else 'off'})"

    def config(self) -> dict[str, Any]:
        doc = super().config()
        bot = doc["supervisor"]["bot"]
        bot["command"] = [sys.executable, "main.py", "--channel", "{channel}"]
        bot["preload"] = self.preload
        return doc

    def prepare(self) -> None:
        self.pids_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(HEAVY_BOT, self.workdir / "main.py")

    def fleet_pids(self) -> tuple[list[int], list[int]]:
        """(the bots, the other children of the supervisor: the fork server)."""
        bots = [int(b["pid"]) for b in self.request({"cmd": "status"})["status"]["bots"]]
        others = [p for p in procstat.children(self.pid) if p not in bots]
        return bots, others


def rollup_kib(pid: int) -> dict[str, int]:
    """Pss and USS (Private_Clean + Private_Dirty) of one process, in KiB."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                fields[key] = int(rest.split()[0])
    return {"pss": fields["Pss"], "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


def mib(kib: float) -> float:
    return round(kib / KIB, 1)


def fleet_figures(bots: list[int], others: list[int]) -> dict[str, float]:
    """Σ PSS and Σ USS in MiB of the bots, and of the bots with the fork server."""
    rows = [rollup_kib(p) for p in bots]
    extra = [rollup_kib(p) for p in others]
    bots_pss = sum(r["pss"] for r in rows)
    return {
        "bots_pss_mib": mib(bots_pss),
        "bots_uss_mib": mib(sum(r["uss"] for r in rows)),
        "total_pss_mib": mib(bots_pss + sum(r["pss"] for r in extra)),
        "per_bot_pss_mib": mib(bots_pss / len(rows)),
        "server_pss_mib": mib(sum(r["pss"] for r in extra)),
    }


def measure(size: int, preload: bool, settle: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="kissbot-memory-"))
    fleet = HeavyFleet(root, bench_channels(size), preload)
    try:
        fleet.prepare()
        fleet.launch()
        times = fleet.await_fleet()
        bots, others = fleet.fleet_pids()
        if preload and not others:
            raise SystemExit(f"{fleet.label}: no fork server runs:\n{fleet.tail()}")
        procstat.wait_quiet(limit=0.5, window=1.0, timeout=30.0)  # the start's burst is over
        at_ready = fleet_figures(bots, others)
        log(f"{size} bots, preload {preload}: ready in {times['startup_s']:.1f} s, {at_ready}")
        time.sleep(settle)  # the measured thing: the fleet at work for this long
        if fleet.fleet_pids()[0] != bots:
            raise SystemExit(f"{fleet.label}: a bot restarted during the run:\n{fleet.tail()}")
        settled = fleet_figures(bots, others)
        log(f"{size} bots, preload {preload}: after {settle:g} s, {settled}")
        return {
            "size": size,
            "preload": preload,
            "ready_s": round(times["startup_s"], 2),
            "at_ready": at_ready,
            "settled": settled,
        }
    finally:
        fleet.close()


def report(results: list[dict[str, Any]], settle: float, machine: dict[str, object]) -> str:
    lines = [
        "# Fleet memory: bots exec'd and bots forked from a preloaded parent",
        "",
        "Written by `make bench-memory` (`tests/bench/fleet_memory.py`); see",
        'docs/design.md ("Preload") for what `bot.preload` does.',
        "",
        f"Machine: {machine.get('cpu_model')}, {machine.get('logical_cpus')} logical CPUs "
        f"(shared with other work), {machine.get('kernel')}, Python {machine.get('python')}.",
        "The bot: `tests/bench/heavy_bot.py`, about 60 MB RSS alone (a real KissBot bot is "
        "about 74 MB RSS, 58 MB PSS; hypothesis stands in for aiohttp's and twitchAPI's "
        "import weight, absent from the bench environment).",
        "",
        f"Σ PSS of the bots plus the fork server, once all are ready and after {settle:g} s "
        "of chat activity with the bots' own `gc.collect()` runs; per bot is the bots' "
        "Σ PSS over their number; USS is the bots' own private memory.",
        "",
        "| bots | preload | all ready | Σ PSS at ready | Σ PSS settled | per bot settled "
        "| Σ USS settled | fork server PSS |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s, a = r["settled"], r["at_ready"]
        lines.append(
            f"| {r['size']} | {'on' if r['preload'] else 'off'} | {r['ready_s']:.1f} s "
            f"| {a['total_pss_mib']:,.0f} MiB | {s['total_pss_mib']:,.0f} MiB "
            f"| {s['per_bot_pss_mib']:.1f} MiB | {s['bots_uss_mib']:,.0f} MiB "
            f"| {s['server_pss_mib']:.1f} MiB |"
        )
    lines += ["", "Ratios, preload on over off (settled Σ PSS):", ""]
    for size in sorted({r["size"] for r in results}):
        off = next((r for r in results if r["size"] == size and not r["preload"]), None)
        on = next((r for r in results if r["size"] == size and r["preload"]), None)
        if off and on:
            ratio = on["settled"]["total_pss_mib"] / off["settled"]["total_pss_mib"]
            lines.append(f"- {size} bots: {ratio:.0%}")
    lines += [
        "",
        "Notes:",
        "",
        "- A forked bot's private memory is what it writes: its own state, and the pages of",
        "  shared objects whose reference counts it changes (CPython writes a count at every",
        "  use); `gc.freeze()` keeps the collector from writing to all of them.",
        "- supervisord, pm2, circus and systemd exec every bot: their fleets' memory is the",
        "  `off` rows (each bot is the same interpreter and program).",
        "- Not measured here: KSM (`PR_SET_MEMORY_MERGE`, systemd's `MemoryKSM=`), which needs",
        "  the machine-wide `/sys/kernel/mm/ksm/run` switched on.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="30,100")
    parser.add_argument("--settle-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("docs/fleet-memory.md"))
    parser.add_argument(
        "--report-only", action="store_true", help="write the report from the JSON of the last run"
    )
    args = parser.parse_args()
    if args.report_only:
        raw = json.loads(args.out.with_suffix(".json").read_text())
        args.out.write_text(report(raw["runs"], raw["settle_s"], raw["machine"]))
        return 0
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        for preload in (False, True):
            results.append(measure(size, preload, args.settle_seconds))
    machine = procstat.machine()
    args.out.write_text(report(results, args.settle_seconds, machine))
    args.out.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "settle_s": args.settle_seconds, "runs": results}, indent=1)
        + "\n"
    )
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
