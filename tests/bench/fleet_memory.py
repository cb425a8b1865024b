"""``make bench-memory``: a fleet's memory with bot.preload off and on, KSM, supervisord.

For each fleet size, the same fleet of heavyweight Python bots
(``heavy_bot.py``, copied into the workdir as ``main.py``) runs under:

- ``off``: our supervisor (native backend), every bot exec'd, what every
  supervisor does;
- ``on``: our supervisor, every bot forked from the fork server (``bot.preload``);
- ``supervisord``: the peer, every bot exec'd;
- ``off+ksm`` and ``on+ksm`` (``--ksm-sizes``, when this machine lets the
  benchmark switch KSM on): the same with every bot's memory opted into KSM
  (``PR_SET_MEMORY_MERGE``), ksmd at the kernel's default pace.

Measured, for each: the time from the launch until every bot is ready, then
Σ PSS and Σ USS of the bots (and of the fork server, when there is one) from
``/proc/PID/smaps_rollup``, once all are ready and every ``--sample-seconds``
of chat activity until ``--settle-seconds`` (each bot allocates every 0.5 s
and runs ``gc.collect()`` every 10 s: without ``gc.freeze()`` in the fork
server, collections would turn its shared pages private).

PSS shares each page among the processes that map it: Σ PSS is the fleet's
real footprint. USS is what each bot alone holds (what its end would free).

The report goes to ``docs/fleet-memory.md`` and to the "Fleet memory" section
of ``docs/benchmarks.md``; the raw figures to ``docs/fleet-memory.json``.

Usage: ``.venv/bin/python tests/bench/fleet_memory.py [--sizes 30,100]
[--settle-seconds 600] [--ksm-sizes 30] [--out docs/fleet-memory.md]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make ``bench`` importable from tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procstat
from bench.fleets import bench_channels, log
from bench.ours import Ours
from bench.peer import Supervisord

HEAVY_BOT = Path(__file__).with_name("heavy_bot.py")
KIB = 1024
KSM = Path("/sys/kernel/mm/ksm")
BENCHMARKS_MD = Path("docs/benchmarks.md")
SECTION_BEGIN = "<!-- fleet-memory: written by tests/bench/fleet_memory.py -->"
SECTION_END = "<!-- /fleet-memory -->"


@dataclass(frozen=True)
class Variant:
    key: str
    supervisor: str  # "ours" or "supervisord"
    preload: bool
    ksm: bool


VARIANTS = {
    v.key: v
    for v in (
        Variant("off", "ours", preload=False, ksm=False),
        Variant("on", "ours", preload=True, ksm=False),
        Variant("supervisord", "supervisord", preload=False, ksm=False),
        Variant("off+ksm", "ours", preload=False, ksm=True),
        Variant("on+ksm", "ours", preload=True, ksm=True),
    )
}


def heavy_command(channel: str, ksm: bool) -> list[str]:
    return [sys.executable, "main.py", "--channel", channel, *(["--memory-merge"] if ksm else [])]


class HeavyFleet(Ours):
    """Our supervisor running heavyweight ``main.py`` bots, preload off or on."""

    def __init__(self, root: Path, channels: list[str], variant: Variant) -> None:
        super().__init__(root, channels, restart_delay=0.5)
        self.variant = variant
        self.label = f"kissbot-supervisor (preload {'on' if variant.preload else 'off'})"

    def config(self) -> dict[str, Any]:
        doc = super().config()
        bot = doc["supervisor"]["bot"]
        bot["command"] = heavy_command("{channel}", self.variant.ksm)
        bot["preload"] = self.variant.preload
        return doc

    def prepare(self) -> None:
        self.pids_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(HEAVY_BOT, self.workdir / "main.py")

    def ready_seconds(self, times: dict[str, float]) -> float:
        return times["startup_s"]  # every bot's READY=1

    def fleet_pids(self) -> tuple[list[int], list[int]]:
        """(the bots, the other children of the supervisor: the fork server)."""
        bots = [int(b["pid"]) for b in self.request({"cmd": "status"})["status"]["bots"]]
        others = [p for p in procstat.children(self.pid) if p not in bots]
        return sorted(bots), others


class HeavySupervisord(Supervisord):
    """supervisord running the same heavyweight ``main.py`` bots."""

    def __init__(self, root: Path, channels: list[str], bench_bin: Path) -> None:
        super().__init__(root, channels, bench_bin)
        self.variant = VARIANTS["supervisord"]

    def bot_command(self, channel: str) -> list[str]:
        return heavy_command(channel, ksm=False)

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(HEAVY_BOT, self.workdir / "main.py")

    def ready_seconds(self, times: dict[str, float]) -> float:
        # The bots' own ready files: the same moment as our READY=1 (RUNNING
        # comes sooner and means only "not dead yet", startsecs=0).
        return times["startup_files_s"]

    def fleet_pids(self) -> tuple[list[int], list[int]]:
        return sorted(procstat.children(self.pid)), []


class Ksm:
    """KSM switched on for one run (it is machine-wide), at the kernel's default pace."""

    def __init__(self) -> None:
        self._saved: str | None = None
        self._ksmd_ticks = 0

    @staticmethod
    def unavailable() -> str | None:
        """Why this machine cannot run the KSM rows, or None."""
        if not (KSM / "run").exists():
            return "this kernel has no KSM (/sys/kernel/mm/ksm)"
        if not os.access(KSM / "run", os.W_OK):
            return "/sys/kernel/mm/ksm/run is not writable here (needs root, outside a container)"
        return None

    @staticmethod
    def _ksmd_cpu_ticks() -> int:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if (entry / "comm").read_text().strip() == "ksmd":
                        fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                        return int(fields[11]) + int(fields[12])  # utime, stime
        return 0

    def __enter__(self) -> Ksm:
        self._saved = (KSM / "run").read_text().strip()
        (KSM / "run").write_text("2\n")  # unmerge what an earlier run left
        (KSM / "run").write_text("1\n")
        self._ksmd_ticks = self._ksmd_cpu_ticks()
        return self

    def figures(self) -> dict[str, float]:
        def read(name: str) -> int:
            try:
                return int((KSM / name).read_text())
            except (OSError, ValueError):
                return 0

        page = os.sysconf("SC_PAGE_SIZE")
        ticks = self._ksmd_cpu_ticks() - self._ksmd_ticks
        return {
            "pages_sharing": read("pages_sharing"),
            "pages_shared": read("pages_shared"),
            "saved_mib": mib(read("pages_sharing") * page / KIB),
            "full_scans": read("full_scans"),
            "ksmd_cpu_s": round(ticks / os.sysconf("SC_CLK_TCK"), 1),
        }

    def __exit__(self, *exc: object) -> None:
        (KSM / "run").write_text("2\n")
        if self._saved is not None and self._saved != "2":
            (KSM / "run").write_text(f"{self._saved}\n")


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


def make_fleet(variant: Variant, root: Path, size: int, bench_bin: Path | None) -> Any:
    channels = bench_channels(size)
    if variant.supervisor == "supervisord":
        assert bench_bin is not None
        return HeavySupervisord(root, channels, bench_bin)
    return HeavyFleet(root, channels, variant)


def measure(
    size: int, variant: Variant, settle: float, sample: float, bench_bin: Path | None
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="kissbot-memory-"))
    fleet = make_fleet(variant, root, size, bench_bin)
    name = f"{size} bots, {variant.key}"
    with contextlib.ExitStack() as stack:
        ksm = stack.enter_context(Ksm()) if variant.ksm else None
        stack.callback(fleet.close)
        fleet.prepare()
        fleet.launch()
        times = fleet.await_fleet()
        bots, others = fleet.fleet_pids()
        if len(bots) != size:
            raise SystemExit(f"{name}: {len(bots)} bots run, not {size}:\n{fleet.tail()}")
        if variant.preload and not others:
            raise SystemExit(f"{name}: no fork server runs:\n{fleet.tail()}")
        procstat.wait_quiet(limit=0.5, window=1.0, timeout=30.0)  # the start's burst is over
        at_ready = fleet_figures(bots, others)
        log(f"{name}: ready in {fleet.ready_seconds(times):.1f} s, {at_ready}")
        series = [{"t_s": 0.0, **at_ready}]
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < settle:
            # The measured thing is the fleet at work for this long; the samples show its drift.
            time.sleep(min(sample, settle - elapsed))
            fleet.check_alive()
            series.append({"t_s": round(time.monotonic() - started), **fleet_figures(bots, others)})
        if fleet.fleet_pids()[0] != bots:
            raise SystemExit(f"{name}: a bot restarted during the run:\n{fleet.tail()}")
        settled = series[-1]
        log(f"{name}: after {settle:g} s, {settled}")
        result: dict[str, Any] = {
            "size": size,
            "variant": variant.key,
            "preload": variant.preload,
            "ready_s": round(fleet.ready_seconds(times), 2),
            "at_ready": at_ready,
            "settled": settled,
            "series": series,
        }
        if ksm is not None:
            result["ksm"] = ksm.figures()
            log(f"{name}: KSM {result['ksm']}")
        return result
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


def _mib(value: float) -> str:
    return f"{value:,.0f} MiB"


def _halfway(series: list[dict[str, Any]]) -> dict[str, Any]:
    """The sample nearest the middle of the run (drift shows between it and the end)."""
    end = series[-1]["t_s"]
    return min(series, key=lambda s: abs(s["t_s"] - end / 2))


def _find(results: list[dict[str, Any]], size: int, key: str) -> dict[str, Any] | None:
    return next((r for r in results if r["size"] == size and r["variant"] == key), None)


TARGET_SIZE = 30
TARGET_SHARE = 0.45  # issue 16: Σ PSS with preload at most 45% of without, at 30 bots
STABLE_DRIFT = 0.05  # "stable over time": settled within 5% of halfway


def _target(results: list[dict[str, Any]]) -> list[str]:
    """The issue's target, checked: met or missed, with the figures."""
    off, on = _find(results, TARGET_SIZE, "off"), _find(results, TARGET_SIZE, "on")
    if not (off and on):
        return []
    share = on["settled"]["total_pss_mib"] / off["settled"]["total_pss_mib"]
    half = _halfway(on["series"])["total_pss_mib"]
    drift = on["settled"]["total_pss_mib"] / half - 1
    met = share <= TARGET_SHARE and abs(drift) <= STABLE_DRIFT
    return [
        "",
        f"Target (at {TARGET_SIZE} bots, Σ PSS with preload at most {TARGET_SHARE:.0%} of "
        f"without, and stable over time): {share:.0%}, {drift:+.1%} from halfway to the end: "
        + ("met" if met else "**missed**"),
    ]


def section(raw: dict[str, Any]) -> str:
    """The report's body: one home for docs/fleet-memory.md and docs/benchmarks.md."""
    results: list[dict[str, Any]] = raw["runs"]
    machine: dict[str, Any] = raw["machine"]
    settle = float(raw["settle_s"])
    lines = [
        "Written by `make bench-memory` (`tests/bench/fleet_memory.py`); see",
        'docs/design.md ("Preload") for what `bot.preload` does and docs/operations.md',
        '("Sharing the bots\' memory") for when to use it and `bot.memory_merge`.',
        "",
        f"Machine: {machine.get('cpu_model')}, {machine.get('logical_cpus')} logical CPUs "
        f"(shared with other work), {machine.get('kernel')}, Python {machine.get('python')}.",
        "The bot: `tests/bench/heavy_bot.py`, about 60 MB RSS alone (a real KissBot bot is "
        "about 74 MB RSS, 58 MB PSS; hypothesis stands in for aiohttp's and twitchAPI's "
        "import weight, absent from the bench environment).",
        "",
        "Runs: `off`, every bot exec'd by kissbot-supervisor (native backend); `on`, every bot",
        "forked from the fork server (`bot.preload: true`); `supervisord`, every bot exec'd by",
        "supervisord; `+ksm`, the same with each bot's memory opted into KSM",
        "(`PR_SET_MEMORY_MERGE`, what systemd's `MemoryKSM=` sets) and ksmd at the kernel's",
        "default pace.",
        "",
        f"Σ PSS is of the bots plus the fork server, once all are ready, halfway and after "
        f"{settle:g} s of chat activity with the bots' own `gc.collect()` runs; per bot is the "
        "bots' Σ PSS over their number; USS is the bots' own private memory.",
        "",
        "| bots | run | all ready | Σ PSS at ready | Σ PSS halfway | Σ PSS settled "
        "| per bot settled | Σ USS settled | fork server PSS |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s, a, h = r["settled"], r["at_ready"], _halfway(r["series"])
        lines.append(
            f"| {r['size']} | {r['variant']} | {r['ready_s']:.1f} s "
            f"| {_mib(a['total_pss_mib'])} | {_mib(h['total_pss_mib'])} ({h['t_s']:.0f} s) "
            f"| {_mib(s['total_pss_mib'])} | {s['per_bot_pss_mib']:.1f} MiB "
            f"| {_mib(s['bots_uss_mib'])} "
            f"| {s['server_pss_mib']:.1f} MiB |"
        )
    lines += _target(results)
    lines += ["", "Settled Σ PSS, as a share of the same fleet exec'd:", ""]
    for size in sorted({r["size"] for r in results}):
        off, sup = _find(results, size, "off"), _find(results, size, "supervisord")
        shares = []
        for key in ("on", "off+ksm", "on+ksm"):
            run = _find(results, size, key)
            for base, name in ((off, "off"), (sup, "supervisord")):
                if run and base:
                    share = run["settled"]["total_pss_mib"] / base["settled"]["total_pss_mib"]
                    shares.append(f"`{key}` {share:.0%} of `{name}`")
        if off and sup:
            share = off["settled"]["total_pss_mib"] / sup["settled"]["total_pss_mib"]
            shares.append(f"`off` {share:.0%} of `supervisord`")
        if shares:
            lines.append(f"- {size} bots: " + "; ".join(shares) + ".")
    ksm_runs = [r for r in results if "ksm" in r]
    if ksm_runs:
        lines += [
            "",
            "KSM, at the end of each `+ksm` run (ksmd's CPU is its time over the whole run):",
            "",
            "| bots | run | pages merged away | full scans | ksmd CPU | of one core |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for r in ksm_runs:
            k = r["ksm"]
            core = k["ksmd_cpu_s"] / max(1.0, float(r["series"][-1]["t_s"]))
            lines.append(
                f"| {r['size']} | {r['variant']} | {_mib(k['saved_mib'])} "
                f"| {k['full_scans']} | {k['ksmd_cpu_s']:.1f} s | {core:.1%} |"
            )
        lines += [
            "",
            "A `+ksm` row falls for as long as ksmd takes to work through the fleet at its",
            "default pace (`pages_to_scan` 100 every `sleep_millisecs` 20): compare its",
            "halfway and settled figures. A faster pace merges sooner, for more CPU.",
        ]
    elif raw.get("ksm_skipped"):
        lines += ["", f"KSM rows skipped: {raw['ksm_skipped']}."]
    lines += [
        "",
        "Notes:",
        "",
        "- A forked bot's private memory is what it writes: its own state, and the pages of",
        "  shared objects whose reference counts it changes (CPython writes a count at every",
        "  use); `gc.freeze()` keeps the collector from writing to all of them.",
        "- supervisord, pm2, circus and systemd exec every bot, so their fleets cost what the",
        "  `off` and `supervisord` rows cost: the supervisor's choice does not change a bot.",
        "- KSM merges only identical anonymous pages. Python's heap holds pointers, which",
        "  differ between processes that loaded the same modules at different addresses.",
    ]
    return "\n".join(lines) + "\n"


def report(raw: dict[str, Any]) -> str:
    return "# Fleet memory: bots exec'd and bots forked from a preloaded parent\n\n" + section(raw)


def splice(doc: str, body: str) -> str:
    """``doc`` with its fleet-memory section replaced by ``body`` (or added at the end)."""
    block = f"{SECTION_BEGIN}\n## Fleet memory\n\n{body}{SECTION_END}\n"
    if SECTION_BEGIN in doc and SECTION_END in doc:
        head, _, rest = doc.partition(SECTION_BEGIN)
        _, _, tail = rest.partition(SECTION_END + "\n")
        return head + block + tail
    return doc.rstrip("\n") + "\n\n" + block


def write_reports(raw: dict[str, Any], out: Path, benchmarks: Path) -> None:
    out.write_text(report(raw))
    if benchmarks.exists():
        benchmarks.write_text(splice(benchmarks.read_text(), section(raw)))
    log(f"wrote {out} and the fleet-memory section of {benchmarks}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="30,100")
    parser.add_argument("--variants", default="off,on,supervisord")
    parser.add_argument(
        "--ksm-sizes", default="30", help="sizes that also run off+ksm and on+ksm ('' for none)"
    )
    parser.add_argument("--settle-seconds", type=float, default=600.0)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("docs/fleet-memory.md"))
    parser.add_argument("--benchmarks", type=Path, default=BENCHMARKS_MD)
    parser.add_argument(
        "--report-only", action="store_true", help="write the reports from the JSON of the last run"
    )
    args = parser.parse_args()
    json_path = args.out.with_suffix(".json")
    if args.report_only:
        write_reports(json.loads(json_path.read_text()), args.out, args.benchmarks)
        return 0
    ksm_sizes = {int(s) for s in args.ksm_sizes.split(",") if s}
    ksm_skipped = Ksm.unavailable() if ksm_sizes else None
    plan: list[tuple[int, Variant]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        keys = args.variants.split(",")
        if size in ksm_sizes and ksm_skipped is None:
            keys += ["off+ksm", "on+ksm"]
        plan += [(size, VARIANTS[k]) for k in keys]
    # Not at the top: run.py imports this module for its report.
    from bench.run import ensure_bench_venv, snapshot_source, source_state

    bench_bin = None
    if any(v.supervisor == "supervisord" for _, v in plan):
        bench_bin = ensure_bench_venv()
    snapshot = Path(tempfile.mkdtemp(prefix="kissbot-bench-src-"))
    try:
        digest = snapshot_source(snapshot)
        # Every process of the run imports this copy: edits during an hour-long run
        # cannot mix versions (the fork server runs forkserver.py from it too).
        os.environ["PYTHONPATH"] = str(snapshot)
        results = [
            measure(size, v, args.settle_seconds, args.sample_seconds, bench_bin)
            for size, v in plan
        ]
    finally:
        os.environ.pop("PYTHONPATH", None)
        shutil.rmtree(snapshot, ignore_errors=True)
    raw = {
        "source": {**source_state(), "snapshot_sha256": digest},
        "machine": procstat.machine(),
        "settle_s": args.settle_seconds,
        "ksm_skipped": ksm_skipped,
        "runs": results,
    }
    json_path.write_text(json.dumps(raw, indent=1) + "\n")
    write_reports(raw, args.out, args.benchmarks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
