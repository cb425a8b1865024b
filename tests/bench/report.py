"""Turns the raw runs into summaries (for the JSON) and ``docs/benchmarks.md``.

Pure functions of the results dict: no I/O, so the report can be rebuilt from
a saved ``benchmarks.json`` (``python -m bench.report docs/benchmarks.json``
from ``tests/``).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procstat import summary

SUPERVISORS = ("ours", "supervisord")
NAMES = {"ours": "kissbot-supervisor", "supervisord": "supervisord"}

# Per-run scalar figures: key -> how to read it from one run.
SCALARS: dict[str, Callable[[dict[str, Any]], float]] = {
    "rss_ready_mib": lambda r: r["memory_ready"]["rss_mib"],
    "uss_ready_mib": lambda r: r["memory_ready"]["uss_mib"],
    "rss_idle_mib": lambda r: r["memory_idle"]["rss_mib"],
    "uss_idle_mib": lambda r: r["memory_idle"]["uss_mib"],
    "rss_after_status_mib": lambda r: r["memory_after_status"]["rss_mib"],
    "rss_end_mib": lambda r: r["memory_end"]["rss_mib"],
    "idle_cpu_pct": lambda r: r["idle"]["cpu_pct"],
    "idle_cpu_pct_ns": lambda r: r["idle"]["cpu_pct_ns"],
    "idle_wakeups_per_s": lambda r: r["idle"]["wakeups_per_s"],
    "idle_context_switches": lambda r: r["idle"]["context_switches"],
    "startup_s": lambda r: r["startup_s"],
    "startup_files_s": lambda r: r["startup_files_s"],
    "cli_status_ms": lambda r: _median(r["cli_status_ms"]),
    "socket_status_ms": lambda r: _median(r["socket_status_ms"]),
    "bots_rss_mib": lambda r: r["bots_rss_mib"],
    "stop_s": lambda r: r["stop_s"],
}

# Crash figures, pooled over the repeats: key -> (series, field).
CRASHES: dict[str, tuple[str, str]] = {
    "crash_view_ms": ("crash_observed", "view_s"),
    "crash_fork_ms": ("crash_quiet", "fork_s"),
    "crash_bot_ready_ms": ("crash_quiet", "bot_ready_s"),
    "crash_bot_ready_observed_ms": ("crash_observed", "bot_ready_s"),
}


def _median(values: Sequence[float]) -> float:
    return summary(values)["median"]


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """size -> supervisor -> figure -> {median, min, max, p25, p75, p90, n}."""
    out: dict[str, Any] = {}
    for size in results["params"]["sizes"]:
        out[str(size)] = {}
        for sup in SUPERVISORS:
            runs = [r for r in results["runs"] if r["size"] == size and r["supervisor"] == sup]
            if not runs:
                continue
            figures = {key: summary([read(r) for r in runs]) for key, read in SCALARS.items()}
            for key, (series, field) in CRASHES.items():
                values = [s[field] * 1000 for r in runs for s in r[series] if s[field] is not None]
                figures[key] = summary(values)
            # The overhead: what is left once the configured restart delay is taken out
            # (supervisord's autorestart has none).
            delay_ms = results["params"]["restart_delay_s"] * 1000 if sup == "ours" else 0.0
            for key in ("crash_fork_ms", "crash_view_ms"):
                values = [
                    s[CRASHES[key][1]] * 1000 - delay_ms
                    for r in runs
                    for s in r[CRASHES[key][0]]
                    if s[CRASHES[key][1]] is not None
                ]
                figures[key.replace("_ms", "_overhead_ms")] = summary(values)
            out[str(size)][sup] = figures
    return out


# --- formatting ---------------------------------------------------------------


def _num(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _spread(fig: dict[str, float], digits: int) -> str:
    """median (min–max)."""
    if fig["n"] == 0:
        return "—"
    if fig["n"] == 1:
        return _num(fig["median"], digits)
    return f"{_num(fig['median'], digits)} ({_num(fig['min'], digits)}–{_num(fig['max'], digits)})"


def _dist(fig: dict[str, float], digits: int) -> str:
    """median / p90 / max."""
    if fig["n"] == 0:
        return "—"
    return " / ".join(_num(fig[k], digits) for k in ("median", "p90", "max"))


def _ratio(ours: dict[str, float] | None, peer: dict[str, float] | None) -> str:
    if not ours or not peer or not peer["n"] or not ours["n"]:
        return "—"
    a, b = ours["median"], peer["median"]
    if b == 0:
        return "—" if a == 0 else "∞"
    return f"{a / b:.2f}"


@dataclass(frozen=True)
class Row:
    """One line of a per-size table."""

    label: str
    key: str
    digits: int = 1
    dist: bool = False  # crash figures: median / p90 / max
    comparable: bool = True  # False: the two supervisors measure different things
    target: str = ""
    check: Callable[[dict[str, float], dict[str, Any]], bool | None] | None = None


def _rows(delay_ms: float) -> list[Row]:
    return [
        Row("RSS, all ready (MiB)", "rss_ready_mib", target="≤ 16 MiB (100 bots)",
            check=lambda f, _p: f["median"] <= 16),
        Row("USS, all ready (MiB)", "uss_ready_mib"),
        Row("RSS after the idle window (MiB)", "rss_idle_mib", target="≤ 16 MiB (100 bots)",
            check=lambda f, _p: f["median"] <= 16),
        Row("USS after the idle window (MiB)", "uss_idle_mib"),
        Row("RSS after the status requests (MiB)", "rss_after_status_mib"),
        Row("RSS at the end, after the crashes (MiB)", "rss_end_mib"),
        Row("idle CPU, utime+stime (%)", "idle_cpu_pct", digits=3, target="< 0.1 %",
            check=lambda f, _p: f["median"] < 0.1),
        Row("idle CPU, schedstat (%)", "idle_cpu_pct_ns", digits=4, target="< 0.1 %",
            check=lambda f, _p: f["median"] < 0.1),
        Row("idle wake-ups (context switches/s)", "idle_wakeups_per_s", digits=3,
            target="0 periodic (< 0.1/s)", check=lambda f, _p: f["median"] < 0.1),
        Row("launch → all ready (s) ¹", "startup_s", digits=3, target="≤ 3 s (100 bots)",
            check=lambda f, _p: f["median"] <= 3, comparable=False),
        Row("launch → every bot's pids/CH.ready (s)", "startup_files_s", digits=3),
        Row("SIGKILL → new bot forked (ms) ²", "crash_fork_ms", dist=True),
        Row("… less the restart delay: respawn overhead (ms) ²", "crash_fork_overhead_ms",
            dist=True, target="< 20 ms (p90)", check=lambda f, _p: f["p90"] < 20),
        Row("SIGKILL → bot's pids/CH.ready (ms) ²", "crash_bot_ready_ms", dist=True),
        Row("SIGKILL → supervisor says ready (ms) ³", "crash_view_ms", dist=True,
            comparable=False),
        Row("… less the restart delay (ms) ³", "crash_view_overhead_ms", dist=True,
            comparable=False),
        Row("SIGKILL → bot's pids/CH.ready, same kills as ³ (ms)",
            "crash_bot_ready_observed_ms", dist=True),
        Row("status command, wall time (ms) ⁴", "cli_status_ms", target="< 100 ms",
            check=lambda f, _p: f["median"] < 100),
        Row("status round trip on the socket (ms) ⁵", "socket_status_ms", digits=2),
        Row("SIGTERM → supervisor and every bot gone (s)", "stop_s", digits=3),
        Row("all bots' RSS together (MiB)", "bots_rss_mib", digits=0),
    ]  # fmt: skip


def _size_table(size: str, figures: dict[str, Any], delay_ms: float) -> list[str]:
    ours, peer = figures.get("ours"), figures.get("supervisord")
    lines = [
        f"### {size} bots",
        "",
        "| figure | kissbot-supervisor | supervisord | ours/supervisord | target | check |",
        "|---|---|---|---|---|---|",
    ]
    for row in _rows(delay_ms):
        fo = ours.get(row.key) if ours else None
        fp = peer.get(row.key) if peer else None
        fmt = _dist if row.dist else _spread
        check = ""
        if row.check is not None and fo is not None and fo["n"]:
            check = "met" if row.check(fo, figures) else "**missed**"
        lines.append(
            f"| {row.label} | {fmt(fo, row.digits) if fo else '—'} "
            f"| {fmt(fp, row.digits) if fp else '—'} "
            f"| {_ratio(fo, fp) if row.comparable else 'n/c'} "
            f"| {row.target} | {check} |"
        )
    return [*lines, ""]


GROWTH = (
    ("RSS, all ready", "rss_ready_mib", 1024.0, "KiB/bot"),
    ("USS, all ready", "uss_ready_mib", 1024.0, "KiB/bot"),
    ("launch → all ready", "startup_s", 1000.0, "ms/bot"),
    ("idle CPU (schedstat)", "idle_cpu_pct_ns", 1.0, "%/bot"),
    ("status command wall time", "cli_status_ms", 1.0, "ms/bot"),
    ("status round trip", "socket_status_ms", 1.0, "ms/bot"),
)


def _growth(summ: dict[str, Any]) -> list[str]:
    sizes = sorted(summ, key=int)
    if len(sizes) < 2:
        return ["(one size only: no growth figures)", ""]
    small, large = sizes[0], sizes[-1]
    bots = int(large) - int(small)
    lines = [
        f"From {small} to {large} bots, medians: the value at {small} → at {large}, "
        "and the cost of each extra bot.",
        "",
        "| figure | kissbot-supervisor | per bot | supervisord | per bot |",
        "|---|---|---|---|---|",
    ]
    for label, key, scale, unit in GROWTH:
        cells = [label]
        for sup in SUPERVISORS:
            a = summ[small].get(sup, {}).get(key)
            b = summ[large].get(sup, {}).get(key)
            if not a or not b:
                cells += ["—", "—"]
                continue
            digits = 4 if "cpu" in key else 3
            cells.append(f"{_num(a['median'], digits)} → {_num(b['median'], digits)}")
            per_bot = (b["median"] - a["median"]) * scale / bots
            cells.append(f"{per_bot:.{4 if 'cpu' in key else 2}f} {unit}")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _targets(summ: dict[str, Any], delay_ms: float) -> list[str]:
    """The issue's targets, checked on our largest fleet."""
    size = max(summ, key=int)
    ours = summ[size].get("ours")
    if not ours:
        return []
    lines = [f"Checked on our supervisor with {size} bots (medians over the repeats):", ""]
    for row in _rows(delay_ms):
        if row.check is None or row.key not in ours:
            continue
        fig = ours[row.key]
        verdict = "met" if row.check(fig, summ[size]) else "**missed**"
        shown = _dist(fig, row.digits) if row.dist else _num(fig["median"], row.digits)
        lines.append(f"- {row.label.rstrip(' ¹²³⁴⁵')}: {shown} — target {row.target}: {verdict}")
    return [*lines, ""]


def markdown(results: dict[str, Any], chart: str | None) -> str:
    m, v, p = results["machine"], results["versions"], results["params"]
    summ = results["summary"]
    delay_ms = p["restart_delay_s"] * 1000
    out = [
        "# Benchmarks: kissbot-supervisor against supervisord",
        "",
        "Generated by `make bench` (`tests/bench/run.py`); raw figures in "
        "[`benchmarks.json`](benchmarks.json). Both supervisors ran in the same run, "
        "one after the other, on the same machine and the same demo bots.",
        "",
        "## Machine and run",
        "",
        f"- CPU: {m['cpu_model']}, {m['logical_cpus']} logical CPUs "
        f"({m['physical_cores']} cores); RAM {m['ram_gib']} GiB; kernel {m['kernel']}",
        f"- Python {m['python']} (`{m['python_executable']}`, which also runs every demo bot)",
        f"- kissbot-supervisor {v['kissbot_supervisor']}, native backend; supervisord "
        f"{v['supervisord']} from PyPI in `.bench/venv`; matplotlib {v['matplotlib']}",
        f"- Date: {results['date']}",
        f"- Source measured: {_source(results.get('source'))}",
        f"- Command: `{results['command']}`",
        f"- Sizes {', '.join(map(str, p['sizes']))} bots; {p['repeats']} repeats each "
        f"(the order of the two supervisors alternates); idle window {p['idle_seconds']:g} s "
        f"after a {p['settle_seconds']:g} s settle; {p['crashes']} distinct random bots "
        f"SIGKILLed per run; status timed {p['status_runs']} times per run.",
        "",
        "## Targets",
        "",
        *_targets(summ, delay_ms),
        "## Results",
        "",
        "Cells are the median over the repeats with (min–max) across them; crash cells "
        "are median / p90 / max over all kills of all repeats. The ratio is ours over "
        "supervisord, of the medians (below 1: ours is smaller or faster); n/c where the "
        "two measure different things (ready against RUNNING).",
        "",
    ]
    for size in sorted(summ, key=int):
        out += _size_table(size, summ[size], delay_ms)
    out += [
        "¹ Ours: the last `CH: ready` log line, i.e. every bot has sent sd_notify "
        "`READY=1`. supervisord has no readiness protocol: its figure is the time until "
        "`getAllProcessInfo` (what `supervisorctl status` calls) shows every program "
        "`RUNNING` with `startsecs=0`, polled every 20 ms; the next row is the like-for-like "
        "figure (each bot writes `pids/CH.ready` when it is up, whoever runs it).",
        "",
        f"² Unobserved: only `/proc` and `pids/` are watched (every 2 ms), the supervisor "
        f"is not contacted, and each kill waits until the supervisor has been asleep for "
        f"50 ms. Ours includes its configured restart delay of {delay_ms:g} ms "
        f"(`restart.delay_sec`), so its overhead is the figure minus {delay_ms:g} ms; "
        "supervisord's `autorestart` has no delay.",
        "",
        "³ Ours: its `CH: ready` log line (sd_notify `READY=1` from the new bot), read "
        "from its stderr; the same kills as ². supervisord: `getProcessInfo` polled every "
        "5 ms over its socket until the program is `RUNNING` with a new PID: a separate "
        "series, because those requests wake supervisord's loop and so speed up its "
        "restart (see the notes).",
        "",
        "⁴ The installed `kissbotctl status` and `supervisorctl status` as subprocesses "
        "(interpreter start-up included): the median of the per-run medians of "
        f"{p['status_runs']} runs after one warm-up.",
        "",
        "⁵ One status request from this process over the same unix socket, no client "
        'start-up: our JSON line `{"cmd":"status"}` against supervisord\'s XML-RPC '
        "`getAllProcessInfo`.",
        "",
        "## Growth",
        "",
        *_growth(summ),
    ]
    if chart:
        out += ["## Chart", "", f"![benchmarks]({chart})", ""]
    out += _notes(summ, delay_ms, m.get("python_baseline_rss_mib"))
    return "\n".join(out)


def _source(source: dict[str, Any] | None) -> str:
    if not source:
        return "unknown"
    text = f"commit `{str(source['commit'])[:12]}`"
    changed = source.get("src_changed_files") or []
    if changed:
        text += f" plus uncommitted changes to {len(changed)} files under `src/`"
    if source.get("snapshot_sha256"):
        text += f" (snapshot of `src/` sha256 `{str(source['snapshot_sha256'])[:12]}`)"
    return text


def _notes(summ: dict[str, Any], delay_ms: float, baseline: float | None) -> list[str]:
    size = max(summ, key=int)
    ours = summ[size].get("ours", {})
    peer = summ[size].get("supervisord", {})
    lines = ["## Notes", ""]
    if baseline is not None:
        lines.append(
            f"- For scale: a bare interpreter of the same Python (`python -c` blocked on "
            f"stdin) has an RSS of {baseline:.1f} MiB on this machine."
        )
    if ours and peer:
        fork_o = ours["crash_fork_overhead_ms"]["median"]
        fork_p = peer["crash_fork_overhead_ms"]["median"]
        lines.append(
            f"- Respawn overhead at {size} bots, median of the unobserved kills: ours "
            f"{fork_o:.1f} ms beyond its {delay_ms:g} ms delay; supervisord {fork_p:.1f} ms "
            "with no delay configured."
        )
        if fork_p > 500:
            two_s = (
                " When the pipe's end-of-file comes a moment before the bot can be reaped, "
                "the reaping waits for a timeout too: the 2 s cases."
                if peer["crash_fork_ms"]["max"] > 1500
                else ""
            )
            lines.append(
                "- Why supervisord takes about a second: its loop sleeps in `poll()` with a "
                "1 s timeout and its SIGCHLD handler only records the signal. The dead bot's "
                "closed pipe wakes the loop, which reaps it (EXITED), but the restart is "
                "decided in `transition()` at the top of the next turn, and nothing wakes "
                f"that turn before the timeout.{two_s} Polling its API every 5 ms turns its "
                "loop every 5 ms: hence its much faster observed series (³)."
            )
        if peer["stop_s"]["median"] > 5:
            lines.append(
                f"- The same loop makes supervisord slow to stop: {peer['stop_s']['median']:.0f} s "
                f"for {size} bots (ours {ours['stop_s']['median']:.2f} s). It stops its "
                "programs one group at a time and moves on only once the previous one is "
                "reaped; the stopped bot's closed pipe wakes its loop, but mostly a moment "
                "before the bot can be reaped, so the reaping waits for the next 1 s "
                "timeout: about one bot a second."
            )
        if peer["idle_wakeups_per_s"]["median"] > 0.5:
            lines.append(
                "- supervisord's idle wake-ups are that 1 s `poll()` timeout (and its tick "
                "events); ours sleeps in `epoll_wait` with no timeout when no timer is due "
                "(no watchdog configured)."
            )
        grown = ours["rss_after_status_mib"]["median"] - ours["rss_idle_mib"]["median"]
        lines.append(
            f"- Our RSS after the status requests differs from the one at rest by "
            f"{grown:+.2f} MiB (status is served from memory; the figures before any "
            "request show the supervisor at rest)."
        )
    lines += [
        "- The bots: `python -m kissbot_supervisor.demo bot --channel CH --eventsub disabled "
        "--chat-interval 0 --broadcast-poll 0 --ping-interval 0 --system-log-interval 0` "
        "(the same argv under both supervisors, via the main venv's interpreter); each "
        "bot's output goes to one log file per bot under both (10 MiB, 3 backups).",
        "",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild the Markdown from a saved JSON: ``report.py IN.json OUT.md [CHART]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3):
        sys.stderr.write("usage: python -m bench.report IN.json OUT.md [CHART.png]\n")
        return 2
    results = json.loads(Path(args[0]).read_text())
    results["summary"] = summarise(results)
    Path(args[1]).write_text(markdown(results, args[2] if len(args) == 3 else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
