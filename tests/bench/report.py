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

SUPERVISORS = ("ours", "supervisord", "systemd", "systemd_hub")
NAMES = {
    "ours": "kissbot-supervisor",
    "supervisord": "supervisord",
    "systemd": "systemd backend",
    "systemd_hub": "systemd backend, hub on",
}
# Our supervisor, whatever the backend: its restart delay is in every crash figure.
OURS = ("ours", "systemd", "systemd_hub")
# The issues' targets are stated for 100 bots.
TARGET_SIZE = 100

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
    "cpu_at_ready_s": lambda r: r["cpu_at_ready_s"],
    "bots_left_after_stop": lambda r: r["bots_left_after_stop"],
    "stop_s": lambda r: r["stop_s"],
    "hang_reload_s": lambda r: r["hang_reload_s"],
    # The systemd contender only (other runs do not have them: skipped).
    "startup_units_s": lambda r: r["startup_units_s"],
    "systemctl_start_s": lambda r: r["systemctl_start_s"],
    "supervisor_starting_ms": lambda r: r["supervisor_starting_s"] * 1000,
    "supervisor_restarts": lambda r: r["supervisor_restarts"],
    "start_errors": lambda r: r["start_errors"],
    "cli_baseline_ms": lambda r: _median(r["cli_baseline_ms"]),
    "cli_status_net_ms": lambda r: _median(r["cli_status_ms"]) - _median(r["cli_baseline_ms"]),
}


def _other(who: str, part: str, key: str) -> Callable[[dict[str, Any]], float]:
    def read(run: dict[str, Any]) -> float:
        return float(run["others"][who][part][key])

    return read


def _startup_cpu(who: str) -> Callable[[dict[str, Any]], float]:
    def read(run: dict[str, Any]) -> float:
        return float(run["others_startup_cpu_s"][who])

    return read


# The systemd sandbox's own processes, read over the same idle window.
for _who in ("pid1", "journald", "dbus"):
    SCALARS[f"{_who}_rss_mib"] = _other(_who, "memory", "rss_mib")
    SCALARS[f"{_who}_idle_cpu_pct_ns"] = _other(_who, "idle", "cpu_pct_ns")
    SCALARS[f"{_who}_idle_wakeups_per_s"] = _other(_who, "idle", "wakeups_per_s")
    SCALARS[f"{_who}_startup_cpu_s"] = _startup_cpu(_who)

# Crash figures, pooled over the repeats: key -> (series, field).
CRASHES: dict[str, tuple[str, str]] = {
    "crash_view_ms": ("crash_observed", "view_s"),
    "crash_fork_ms": ("crash_quiet", "fork_s"),
    "crash_bot_ready_ms": ("crash_quiet", "bot_ready_s"),
    "crash_bot_ready_observed_ms": ("crash_observed", "bot_ready_s"),
    "crash_unit_active_ms": ("crash_observed", "unit_active_s"),  # systemd only
    # Hang detection: a bot SIGSTOPped under bot.watchdog_sec (not supervisord: no watchdog).
    "hang_killed_ms": ("hang", "killed_s"),
    "hang_fork_ms": ("hang", "fork_s"),
    "hang_bot_ready_ms": ("hang", "bot_ready_s"),
    "hang_view_ms": ("hang", "view_s"),
    "hang_unit_active_ms": ("hang", "unit_active_s"),  # systemd only
}
# supervisord's cell for the figures it cannot have.
PEER_NA = {
    "hang_killed_ms",
    "hang_fork_ms",
    "hang_bot_ready_ms",
    "hang_view_ms",
    "hang_reload_s",
}
OVERHEADS = ("crash_fork_ms", "crash_view_ms", "crash_unit_active_ms")


def _median(values: Sequence[float]) -> float:
    return summary(values)["median"]


def _readable(runs: list[dict[str, Any]], read: Callable[[dict[str, Any]], float]) -> list[float]:
    values = []
    for run in runs:
        try:
            values.append(read(run))
        except (KeyError, TypeError):
            continue  # a figure of another contender
    return values


def _crash_values(runs: list[dict[str, Any]], series: str, field: str, less: float) -> list[float]:
    return [
        s[field] * 1000 - less for r in runs for s in r.get(series, []) if s.get(field) is not None
    ]


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """size -> supervisor -> figure -> {median, min, max, p25, p75, p90, n}.

    A run that failed part-way keeps the figures it measured before the failure
    (the report lists the failures); the ones it did not get are missing from it.
    """
    out: dict[str, Any] = {}
    sizes = sorted({*results["params"]["sizes"], *(r["size"] for r in results["runs"])})
    for size in sizes:
        out[str(size)] = {}
        for sup in SUPERVISORS:
            runs = [r for r in results["runs"] if r["size"] == size and r["supervisor"] == sup]
            if not runs:
                continue
            figures = {key: summary(_readable(runs, read)) for key, read in SCALARS.items()}
            for key, (series, field) in CRASHES.items():
                figures[key] = summary(_crash_values(runs, series, field, 0.0))
            # The overhead: what is left once the configured restart delay is taken out
            # (supervisord's autorestart has none).
            delay_ms = results["params"]["restart_delay_s"] * 1000 if sup in OURS else 0.0
            for key in OVERHEADS:
                series, field = CRASHES[key]
                figures[key.replace("_ms", "_overhead_ms")] = summary(
                    _crash_values(runs, series, field, delay_ms)
                )
            out[str(size)][sup] = {k: v for k, v in figures.items() if v["n"]}
        if not out[str(size)]:
            del out[str(size)]
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
        Row(
            "RSS, all ready (MiB)",
            "rss_ready_mib",
            target="≤ 16 MiB (100 bots)",
            check=lambda f, _p: f["median"] <= 16,
        ),
        Row("USS, all ready (MiB)", "uss_ready_mib"),
        Row(
            "RSS after the idle window (MiB)",
            "rss_idle_mib",
            target="≤ 16 MiB (100 bots)",
            check=lambda f, _p: f["median"] <= 16,
        ),
        Row("USS after the idle window (MiB)", "uss_idle_mib"),
        Row("RSS after the status requests (MiB)", "rss_after_status_mib"),
        Row("RSS at the end, after the crashes (MiB)", "rss_end_mib"),
        Row(
            "idle CPU, utime+stime (%)",
            "idle_cpu_pct",
            digits=3,
            target="< 0.1 %",
            check=lambda f, _p: f["median"] < 0.1,
        ),
        Row(
            "idle CPU, schedstat (%)",
            "idle_cpu_pct_ns",
            digits=4,
            target="< 0.1 %",
            check=lambda f, _p: f["median"] < 0.1,
        ),
        Row(
            "idle wake-ups (context switches/s)",
            "idle_wakeups_per_s",
            digits=3,
            target="0 periodic (< 0.1/s)",
            check=lambda f, _p: f["median"] < 0.1,
        ),
        Row(
            "launch → all ready (s) ¹",
            "startup_s",
            digits=3,
            target="≤ 3 s (100 bots)",
            check=lambda f, _p: f["median"] <= 3,
            comparable=False,
        ),
        Row("launch → every bot's pids/CH.ready (s)", "startup_files_s", digits=3),
        Row("SIGKILL → new bot forked (ms) ²", "crash_fork_ms", dist=True),
        Row(
            "… less the restart delay: respawn overhead (ms) ²",
            "crash_fork_overhead_ms",
            dist=True,
            target="< 20 ms (p90)",
            check=lambda f, _p: f["p90"] < 20,
        ),
        Row("SIGKILL → bot's pids/CH.ready (ms) ²", "crash_bot_ready_ms", dist=True),
        Row("SIGKILL → supervisor says ready (ms) ³", "crash_view_ms", dist=True, comparable=False),
        Row(
            "… less the restart delay (ms) ³", "crash_view_overhead_ms", dist=True, comparable=False
        ),
        Row(
            "SIGKILL → bot's pids/CH.ready, same kills as ³ (ms)",
            "crash_bot_ready_observed_ms",
            dist=True,
        ),
        Row("SIGSTOP → killed by the watchdog (ms) ¹³", "hang_killed_ms", dist=True),
        Row("SIGSTOP → new bot forked (ms) ¹³", "hang_fork_ms", dist=True),
        Row("SIGSTOP → bot's pids/CH.ready (ms) ¹³", "hang_bot_ready_ms", dist=True),
        Row("SIGSTOP → supervisor says ready (ms) ¹³", "hang_view_ms", dist=True),
        Row("reload with the watchdog → every bot ready again (s) ¹³", "hang_reload_s", digits=3),
        Row(
            "status command, wall time (ms) ⁴",
            "cli_status_ms",
            target="< 100 ms",
            check=lambda f, _p: f["median"] < 100,
        ),
        Row("status round trip on the socket (ms) ⁵", "socket_status_ms", digits=2),
        Row("SIGTERM → supervisor and every bot gone (s)", "stop_s", digits=3),
        Row("all bots' RSS together (MiB)", "bots_rss_mib", digits=0),
        Row("supervisor's CPU time, launch → all ready (s)", "cpu_at_ready_s", digits=3),
    ]


def _size_table(size: str, figures: dict[str, Any], delay_ms: float) -> list[str]:
    ours, peer = figures.get("ours"), figures.get("supervisord")
    if not ours and not peer:
        return []
    lines = [f"### {size} bots", ""]
    if not peer:
        lines += [
            "supervisord did not run at this size (`--supervisord-max-size`): it stops about "
            "one bot a second, so each of its runs would take minutes more.",
            "",
        ]
    lines += [
        "| figure | kissbot-supervisor | supervisord | ours/supervisord | target | check |",
        "|---|---|---|---|---|---|",
    ]
    for row in _rows(delay_ms):
        fo = ours.get(row.key) if ours else None
        fp = peer.get(row.key) if peer else None
        if fo is None and row.key in PEER_NA:
            continue  # the hang phase did not run (--hangs 0)
        fmt = _dist if row.dist else _spread
        check = ""
        if row.check is not None and fo is not None and fo["n"]:
            check = "met" if row.check(fo, figures) else "**missed**"
        peer_cell = fmt(fp, row.digits) if fp else "—"
        if peer and not fp and row.key in PEER_NA:
            peer_cell = "n/a (no watchdog)"
        lines.append(
            f"| {row.label} | {fmt(fo, row.digits) if fo else '—'} "
            f"| {peer_cell} "
            f"| {_ratio(fo, fp) if row.comparable else 'n/c'} "
            f"| {row.target} | {check} |"
        )
    return [*lines, ""]


def _sd_rows() -> list[Row]:
    """The systemd backend's table; the checks are the systemd issue's targets."""
    return [
        Row(
            "RSS, all ready (MiB)",
            "rss_ready_mib",
            target="≤ 16 MiB (100 bots)",
            check=lambda f, _p: f["median"] <= 16,
        ),
        Row("USS, all ready (MiB)", "uss_ready_mib"),
        Row(
            "RSS after the idle window (MiB)",
            "rss_idle_mib",
            target="≤ 16 MiB (100 bots)",
            check=lambda f, _p: f["median"] <= 16,
        ),
        Row("RSS after the status requests (MiB)", "rss_after_status_mib"),
        Row("RSS at the end, after the crashes (MiB)", "rss_end_mib"),
        Row(
            "idle CPU, utime+stime (%)",
            "idle_cpu_pct",
            digits=3,
            target="< 0.1 % (100 bots)",
            check=lambda f, _p: f["median"] < 0.1,
        ),
        Row(
            "idle CPU, schedstat (%)",
            "idle_cpu_pct_ns",
            digits=4,
            target="< 0.1 % (100 bots)",
            check=lambda f, _p: f["median"] < 0.1,
        ),
        Row("idle wake-ups (context switches/s) ¹⁰", "idle_wakeups_per_s", digits=3),
        Row(
            "`systemctl start` → systemd starts the supervisor (ms) ⁶",
            "supervisor_starting_ms",
            digits=1,
        ),
        Row(
            "`systemctl start` returns: the supervisor's own READY=1 (s) ⁶",
            "systemctl_start_s",
            digits=3,
        ),
        Row(
            "`systemctl start` → every bot unit active (s) ⁶",
            "startup_units_s",
            digits=3,
            target="≤ 2 s (100 bots)",
            check=lambda f, _p: f["median"] <= 2,
        ),
        Row("`systemctl start` → supervisor says all ready (s) ⁶", "startup_s", digits=3),
        Row("`systemctl start` → every bot's pids/CH.ready (s)", "startup_files_s", digits=3),
        Row(
            "supervisor restarted by systemd during the start (times)",
            "supervisor_restarts",
            digits=0,
        ),
        Row('"could not start" lines during the start', "start_errors", digits=0),
        Row("SIGKILL → new process in the unit's cgroup (ms) ⁷", "crash_fork_ms", dist=True),
        Row("… less the restart delay (ms) ⁷", "crash_fork_overhead_ms", dist=True),
        Row("SIGKILL → bot's pids/CH.ready (ms) ⁷", "crash_bot_ready_ms", dist=True),
        Row("SIGKILL → unit active again, new MainPID (ms) ⁷", "crash_unit_active_ms", dist=True),
        Row("… less the restart delay (ms) ⁷", "crash_unit_active_overhead_ms", dist=True),
        Row("SIGKILL → supervisor says ready (ms) ⁷", "crash_view_ms", dist=True),
        Row("SIGSTOP → killed by systemd's watchdog (ms) ¹³", "hang_killed_ms", dist=True),
        Row("SIGSTOP → new process in the unit's cgroup (ms) ¹³", "hang_fork_ms", dist=True),
        Row("SIGSTOP → bot's pids/CH.ready (ms) ¹³", "hang_bot_ready_ms", dist=True),
        Row("SIGSTOP → unit active again (ms) ¹³", "hang_unit_active_ms", dist=True),
        Row("SIGSTOP → supervisor says ready (ms) ¹³", "hang_view_ms", dist=True),
        Row("reload with the watchdog → every bot ready again (s) ¹³", "hang_reload_s", digits=3),
        Row("`nsenter … kissbotctl status`, wall time (ms) ⁸", "cli_status_ms"),
        Row("`nsenter … /bin/true`, wall time (ms) ⁸", "cli_baseline_ms"),
        Row(
            "`kissbotctl status`, nsenter taken out (ms) ⁸",
            "cli_status_net_ms",
            target="< 100 ms (100 bots)",
            check=lambda f, _p: f["median"] < 100,
        ),
        Row("status round trip on the socket (ms) ⁵", "socket_status_ms", digits=2),
        Row("`systemctl stop kissbot-supervisor` → every bot gone (s) ¹²", "stop_s", digits=3),
        Row(
            "bots still running 20 s after `systemctl stop` returned ¹²",
            "bots_left_after_stop",
            digits=0,
        ),
        Row("all bots' RSS together (MiB)", "bots_rss_mib", digits=0),
        Row("supervisor's CPU time, its start → all ready (s) ¹¹", "cpu_at_ready_s", digits=3),
        Row(
            "sandbox PID 1: CPU time, `systemctl start` → all ready (s) ⁹",
            "pid1_startup_cpu_s",
            digits=3,
        ),
        Row("sandbox journald: CPU time, same span (s) ⁹", "journald_startup_cpu_s", digits=3),
        Row("sandbox dbus-daemon: CPU time, same span (s) ⁹", "dbus_startup_cpu_s", digits=3),
        Row("sandbox PID 1 (systemd): RSS (MiB) ⁹", "pid1_rss_mib"),
        Row("sandbox PID 1: idle CPU, schedstat (%) ⁹", "pid1_idle_cpu_pct_ns", digits=4),
        Row("sandbox PID 1: idle wake-ups (/s) ⁹", "pid1_idle_wakeups_per_s", digits=3),
        Row("sandbox journald: idle wake-ups (/s) ⁹", "journald_idle_wakeups_per_s", digits=3),
        Row("sandbox dbus-daemon: idle wake-ups (/s) ⁹", "dbus_idle_wakeups_per_s", digits=3),
    ]


def _sd_table(size: str, figures: dict[str, Any]) -> list[str]:
    sd, hub, native = figures.get("systemd"), figures.get("systemd_hub"), figures.get("ours")
    if not sd and not hub:
        return []
    runs = int(hub["startup_s"]["n"]) if hub else 0
    head = ["figure", "systemd backend"]
    if hub:
        head.append(f"systemd backend, hub on ({runs} run{'s' if runs != 1 else ''})")
    head += ["native backend (same run)", "systemd/native", "target", "check"]
    lines = [
        f"### {size} bots, systemd backend",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in _sd_rows():
        fs = sd.get(row.key) if sd else None
        fh = hub.get(row.key) if hub else None
        fn = native.get(row.key) if native else None
        if not fs and not fh:
            continue
        fmt = _dist if row.dist else _spread
        check = ""
        if row.check is not None and fs is not None and fs["n"]:
            check = "met" if row.check(fs, figures) else "**missed**"
        cells = [row.label, fmt(fs, row.digits) if fs else "—"]
        if hub:
            cells.append(fmt(fh, row.digits) if fh else "—")
        cells += [fmt(fn, row.digits) if fn else "—", _ratio(fs, fn), row.target, check]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


GROWTH = (
    ("RSS, all ready (MiB)", "rss_ready_mib", 1024.0, "KiB/bot"),
    ("USS, all ready (MiB)", "uss_ready_mib", 1024.0, "KiB/bot"),
    ("launch → all ready (s)", "startup_s", 1000.0, "ms/bot"),
    ("`systemctl start` → every bot unit active (s)", "startup_units_s", 1000.0, "ms/bot"),
    ("idle CPU, schedstat (%)", "idle_cpu_pct_ns", 1.0, "%/bot"),
    ("idle wake-ups (/s)", "idle_wakeups_per_s", 1.0, "/s/bot"),
    ("SIGKILL → new bot forked, median (ms)", "crash_fork_ms", 1.0, "ms/bot"),
    ("SIGKILL → supervisor says ready, median (ms)", "crash_view_ms", 1.0, "ms/bot"),
    ("SIGSTOP → killed by the watchdog, median (ms)", "hang_killed_ms", 1.0, "ms/bot"),
    ("SIGSTOP → supervisor says ready, median (ms)", "hang_view_ms", 1.0, "ms/bot"),
    ("status command wall time (ms)", "cli_status_ms", 1.0, "ms/bot"),
    ("status round trip (ms)", "socket_status_ms", 1.0, "ms/bot"),
    ("stop → every bot gone (s)", "stop_s", 1000.0, "ms/bot"),
    ("supervisor's CPU time to all ready (s)", "cpu_at_ready_s", 1000.0, "ms/bot"),
)
GROWN = ("ours", "supervisord", "systemd")


def _growth(summ: dict[str, Any]) -> list[str]:
    spans: dict[str, tuple[str, str]] = {}
    for sup in GROWN:
        sizes = sorted((s for s in summ if sup in summ[s]), key=int)
        if len(sizes) >= 2:
            spans[sup] = (sizes[0], sizes[-1])
    if not spans:
        return ["(one size only: no growth figures)", ""]
    head = ["figure"]
    for sup, (small, large) in spans.items():
        head += [f"{NAMES[sup]}, {small} → {large} bots", "×", "per bot"]
    lines = [
        "Medians at the smallest and the largest size each contender ran, the factor "
        "between the two (×) and the cost of each extra bot; supervisord has no "
        "watchdog (no hang rows).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for label, key, scale, unit in GROWTH:
        cells = [label]
        for sup, (small, large) in spans.items():
            a = summ[small][sup].get(key)
            b = summ[large][sup].get(key)
            if not a or not b:
                cells += ["—", "—", "—"]
                continue
            digits = 4 if "cpu" in key else 3
            cells.append(f"{_num(a['median'], digits)} → {_num(b['median'], digits)}")
            cells.append(_ratio(b, a))
            per_bot = (b["median"] - a["median"]) * scale / (int(large) - int(small))
            cells.append(f"{per_bot:.{4 if 'cpu' in key else 2}f} {unit}")
        if any(cell != "—" for cell in cells[1:]):
            lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


# Figures that both sides measure alike, for the side-by-side ratios.
RATIOS = (
    ("RSS, all ready", "rss_ready_mib"),
    ("USS, all ready", "uss_ready_mib"),
    ("idle CPU, schedstat", "idle_cpu_pct_ns"),
    ("idle wake-ups", "idle_wakeups_per_s"),
    ("launch → every bot's pids/CH.ready", "startup_files_s"),
    ("SIGKILL → new bot forked", "crash_fork_ms"),
    ("SIGKILL → bot's pids/CH.ready", "crash_bot_ready_ms"),
    ("status command wall time", "cli_status_ms"),
    ("status round trip", "socket_status_ms"),
    ("stop → every bot gone", "stop_s"),
    ("supervisor's CPU time to all ready", "cpu_at_ready_s"),
)


def _ratios(summ: dict[str, Any]) -> list[str]:
    """Ours (native, systemd) over supervisord, every size where supervisord ran."""
    sizes = sorted((s for s in summ if "supervisord" in summ[s]), key=int)
    if not sizes:
        return ["(supervisord did not run: no ratios)", ""]
    head = ["figure"]
    for size in sizes:
        head += [f"native/supervisord, {size} bots"]
        if any("systemd" in summ[s] for s in sizes):
            head += [f"systemd/supervisord, {size} bots"]
    lines = [
        "Medians of ours over supervisord's at each size both ran (below 1: ours is "
        "smaller or faster). Hang detection: n/a, supervisord has no watchdog.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    with_sd = any("systemd" in summ[s] for s in sizes)
    for label, key in RATIOS:
        cells = [label]
        for size in sizes:
            peer = summ[size]["supervisord"].get(key)
            cells.append(_ratio(summ[size].get("ours", {}).get(key), peer))
            if with_sd:
                cells.append(_ratio(summ[size].get("systemd", {}).get(key), peer))
        if any(cell != "—" for cell in cells[1:]):
            lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _target_size(summ: dict[str, Any], sup: str) -> str | None:
    """Where the targets are checked: 100 bots when that size ran, else the largest."""
    sizes = [s for s in summ if sup in summ[s]]
    if not sizes:
        return None
    return str(TARGET_SIZE) if str(TARGET_SIZE) in sizes else max(sizes, key=int)


def _check_list(summ: dict[str, Any], sup: str, rows: list[Row], what: str) -> list[str]:
    size = _target_size(summ, sup)
    if size is None:
        return []
    figures = summ[size][sup]
    lines = [f"{what}, with {size} bots (medians over the repeats):", ""]
    for row in rows:
        if row.check is None or row.key not in figures:
            continue
        fig = figures[row.key]
        verdict = "met" if row.check(fig, summ[size]) else "**missed**"
        shown = _dist(fig, row.digits) if row.dist else _num(fig["median"], row.digits)
        label = row.label.rstrip(" ¹²³⁴⁵⁶⁷⁸⁹⁰")
        lines.append(f"- {label}: {shown} — target {row.target}: {verdict}")
    return [*lines, ""]


def _targets(summ: dict[str, Any], delay_ms: float) -> list[str]:
    """The issues' targets: the native backend's, then the systemd backend's."""
    return [
        *_check_list(summ, "ours", _rows(delay_ms), "Native backend (its issue's targets)"),
        *_check_list(summ, "systemd", _sd_rows(), "systemd backend (the systemd issue's targets)"),
    ]


def _sd_section(results: dict[str, Any], summ: dict[str, Any], delay_ms: float) -> list[str]:
    if not any("systemd" in figures or "systemd_hub" in figures for figures in summ.values()):
        return []
    p = results["params"]
    version = next(
        (r["systemd_version"] for r in results["runs"] if r.get("systemd_version")), "systemd ?"
    )
    fallback = p.get("systemd_fallback_restart_s", 5.0)
    out = [
        "## systemd backend",
        "",
        "Our supervisor as the unit `kissbot-supervisor.service`, in a system manager "
        f"({version}) booted for each run in a PID + mount namespace "
        "(`tests/systemd_sandbox`), with its own system bus and journald. "
        "`units/kissbot-supervisor.service` and `units/kissbot.slice` are installed as "
        "shipped (`Type=notify`, `WatchdogSec=30`, the hardening), plus a drop-in that "
        "points `ExecStart=` at the venv's script with the run's `--workdir` and puts the "
        "run's source snapshot on `PYTHONPATH`; the system bus is started before the "
        "timing, as on any machine. It is started with `systemctl start "
        "kissbot-supervisor` (through `nsenter`) and runs the bots as transient "
        "`Type=notify` units `kissbot-bot@CH.service` in `kissbot.slice` "
        "(`supervisor.backend: systemd`, `bot.ready: notify`, no hub; unit hardening "
        "on, the default). The bots are the same demo bots with the same flags, started "
        "as `/usr/bin/env PYTHONPATH=SNAPSHOT python -m kissbot_supervisor.demo bot …` "
        "(systemd passes the units no environment of ours; `env` execs the interpreter, "
        f"so it is the unit's MainPID). Restart delay {delay_ms:g} ms as for the native "
        f"backend; `restart.max_delay_sec` {fallback:g} s, which becomes the units' "
        "`RestartSec=` (systemd's own fallback for when the supervisor is down), so every "
        "restart measured is the supervisor's `RestartUnit`. The hub column is one more "
        "run with `hub.enabled` (the demo hub, `ready: socket`; the bots connect to it).",
        "",
        "The supervisor's memory, CPU time and context switches are read from `/proc` on "
        "the host, exactly as for the native backend: the processes of the namespace are "
        "host processes too, and the unit's MainPID (a PID inside) is mapped to its host "
        "PID by the `NSpid` line of `/proc/PID/status`. The native column repeats the "
        "native backend's figures from the same run.",
        "",
    ]
    for size in sorted(summ, key=int):
        out += _sd_table(size, summ[size])
    out += [
        "⁶ From the moment `nsenter -t PID1 -m -p -u -- systemctl start kissbot-supervisor` "
        'is spawned on the host. "systemd starts the supervisor": PID 1\'s `Starting '
        "kissbot-supervisor.service` journal entry. `systemctl start` returns once the "
        "supervisor has sent its own `READY=1`, which it does when the fleet's first start "
        'is under way. "Every bot unit active": the last of PID 1\'s `Started '
        "kissbot-bot@CH.service` entries, which systemd logs when the start job completes, "
        "for `Type=notify` on the bot's `READY=1` (cross-checked afterwards with "
        "`systemctl list-units 'kissbot-bot@*' --state=active`). \"Supervisor says all "
        'ready": the last of its `CH: ready` lines (its stdout, in the journal; a '
        "supervisor restarted by systemd says `CH: adopted, already running` instead, "
        "which counts too). Journal entries are read with `journalctl -f -o json` inside and "
        "timed by their journald timestamps.",
        "",
        "⁷ The same kind of series as ², one per run: each kill waits until the supervisor "
        "has been asleep for 50 ms, then SIGKILLs the host PID of the unit's MainPID. \"New "
        "process\": the first PID other than the dead bot's in the unit's cgroup "
        "(`cgroup.procs` of the cgroup2 hierarchy on the host, polled every 2 ms), which "
        "is systemd's child before its exec. \"Unit active again\": PID 1's `Started` entry "
        "for the unit (the new bot's `READY=1`), after which `systemctl show -p MainPID` "
        "must name the new process. The supervisor restarts a failed bot with "
        f"`RestartUnit` after its restart delay ({delay_ms:g} ms), taken out in the "
        '"less the restart delay" rows.',
        "",
        "⁸ `nsenter -t PID1 -m -p -u -- kissbotctl --socket "
        "/run/kissbot-supervisor/control.sock status`, timed on the host as in ⁴; "
        "`nsenter … /bin/true` is timed in the same way right after, and its median taken "
        "from the status command's median run by run: what an operator inside sees.",
        "",
        "⁹ The sandbox's own systemd (PID 1), journald and dbus-daemon over the same idle "
        "window: the share of the fleet's cost that lives outside our process under this "
        "backend (PID 1 holds the units). A real machine runs them anyway.",
        "",
        "¹⁰ `units/kissbot-supervisor.service` sets `WatchdogSec=30`: the supervisor sends "
        "`WATCHDOG=1` from its loop every 15 s, its only periodic wake-up (the native runs "
        "have no watchdog).",
        "",
        "¹¹ The supervisor process's own CPU time (schedstat) from its start to the moment "
        "every bot is ready; a supervisor restarted by systemd during the start counts "
        "from its restart.",
        "",
        "¹² When bots are still running 20 s after `systemctl stop kissbot-supervisor` "
        "has returned, that run has no stop time and counts "
        "them in the next row; powering the sandbox off ends them.",
        "",
    ]
    return out


def _quiet_summary(results: dict[str, Any]) -> str:
    runs = [r for r in results["runs"] if "machine_busy_before" in r]
    if not runs:
        return ""
    limit = results["params"].get("quiet_busy", 1.0)
    loud = [r for r in runs if r["machine_busy_before"] > limit]
    waited = sum(r["quiet_wait_s"] for r in runs)
    text = f"; {waited / 60:.0f} min waited in all"
    if loud:
        text += f", {len(loud)} of {len(runs)} runs started on a busier machine after the timeout"
    return text


def _failures(results: dict[str, Any]) -> list[str]:
    """Runs that failed part-way, and runs that ended with something not as it should be."""
    lines: list[str] = []
    for run in results["runs"]:
        what = f"{NAMES.get(run['supervisor'], run['supervisor'])}, {run['size']} bots, " + (
            f"repeat {run['repeat'] + 1}"
        )
        if "error" in run:
            lines.append(f"- {what}: failed: {str(run['error']).strip().splitlines()[0]}")
        if run.get("not_running_at_end"):
            states = run["not_running_at_end"]
            shown = ", ".join(f"{name} {state}" for name, state in sorted(states.items())[:5])
            lines.append(
                f"- {what}: {len(states)} bots not `running` in the supervisor's status at "
                f"the end of the run ({shown})"
            )
        if run.get("stop_error"):
            lines.append(f"- {what}: {str(run['stop_error']).strip().splitlines()[0]}")
    if not lines:
        return []
    return [
        "## Failed runs and anomalies",
        "",
        "A run stops at its first failure: the figures it measured before it are in the "
        "tables above, the later ones come from fewer runs. Anomalies at the end of a run "
        "do not stop it.",
        "",
        *lines,
        "",
    ]


def markdown(results: dict[str, Any], chart: str | None) -> str:
    m, v, p = results["machine"], results["versions"], results["params"]
    summ = results["summary"]
    delay_ms = p["restart_delay_s"] * 1000
    contenders = p.get("contenders", ["ours", "supervisord"])
    sizes = ", ".join(map(str, p["sizes"]))
    peer_max = p.get("supervisord_max_size")
    peer_sizes = (
        f" (supervisord up to {peer_max})"
        if peer_max is not None and any(s > peer_max for s in p["sizes"])
        else ""
    )
    out = [
        "# Benchmarks: kissbot-supervisor (native and systemd backends) against supervisord",
        "",
        "Generated by `make bench` (`tests/bench/run.py`); raw figures in "
        "[`benchmarks.json`](benchmarks.json). Every contender ran in the same run, "
        "one after the other, on the same machine and the same demo bots: our supervisor "
        "on its native backend, supervisord, and our supervisor on its systemd backend "
        "under a real systemd (section [systemd backend](#systemd-backend)).",
        "",
        "## Machine and run",
        "",
        f"- CPU: {m['cpu_model']}, {m['logical_cpus']} logical CPUs "
        f"({m['physical_cores']} cores); RAM {m['ram_gib']} GiB; kernel {m['kernel']}",
        f"- Python {m['python']} (`{m['python_executable']}`, which also runs every demo bot)",
        f"- kissbot-supervisor {v['kissbot_supervisor']}; supervisord "
        f"{v['supervisord']} from PyPI in `.bench/venv`; matplotlib {v['matplotlib']}",
        f"- Date: {results['date']}",
        f"- Source measured: {_source(results.get('source'))}",
        f"- Command: `{results['command']}`",
        f"- Contenders {', '.join(contenders)}; sizes {sizes} bots{peer_sizes}; "
        f"{p['repeats']} repeats each (the order of the contenders rotates); idle window "
        f"{p['idle_seconds']:g} s after a {p['settle_seconds']:g} s settle; {p['crashes']} "
        f"distinct random bots SIGKILLed per run; status timed {p['status_runs']} times "
        "per run.",
        "- The machine is shared and other work on it was not stopped: each run waited "
        f"until at most {p.get('quiet_busy', 1.0):.0%} of all CPUs were busy over 2 s "
        f"(for at most {p.get('quiet_timeout_s', 0):g} s; `quiet_wait_s`, "
        "`machine_busy_before` and the 1-minute `loadavg_before` of each run are in the "
        f"JSON){_quiet_summary(results)}.",
        "",
        "## Targets",
        "",
        *_targets(summ, delay_ms),
        "## Results: native backend and supervisord",
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
        "`getAllProcessInfo` (systemd backend: the control socket reached from the host "
        "through `/proc/PID1/root/run/kissbot-supervisor/control.sock`).",
        "",
        *_sd_section(results, summ, delay_ms),
        "## Growth",
        "",
        *_growth(summ),
        "## Ratios to supervisord, side by side",
        "",
        *_ratios(summ),
        f"¹³ Hang detection: after the crashes, the config is reloaded with "
        f"`bot.watchdog_sec: {p.get('hang_watchdog_s', 1.0):g}` (every bot restarts with "
        "it; the watchdog is off before, its pings would wake the supervisor in the idle "
        f"window), then {p.get('hangs', 0)} distinct random bots are SIGSTOPped one at a "
        "time. A bot pings every half period, so its last ping came 0 to half a period "
        "before the SIGSTOP: the kill is due between half a period and a period after it. "
        "Native: the supervisor's own watchdog SIGKILLs the bot's group; systemd: "
        "`WatchdogUSec` on the unit, systemd sends SIGABRT (and SIGCONT); then the "
        f"restart delay ({delay_ms:g} ms) and the new bot's start. supervisord has no "
        "watchdog or heartbeat of any kind: a hung program stays `RUNNING` (n/a).",
        "",
    ]
    if chart:
        out += ["## Chart", "", f"![benchmarks]({chart})", ""]
    out += _notes(summ, delay_ms, m.get("python_baseline_rss_mib"))
    out += _sd_notes(results, summ, delay_ms)
    out += _failures(results)
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
    both = [s for s in summ if "ours" in summ[s] and "supervisord" in summ[s]]
    size = max(both or summ, key=int)
    ours = summ[size].get("ours", {})
    peer = summ[size].get("supervisord", {})
    lines = ["## Notes", ""]
    lines.append(
        "- The bots' own memory, exec'd or forked from a preloaded parent (`bot.preload`): "
        "docs/fleet-memory.md (`make bench-memory`)."
    )
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
        "(the same argv under every contender, via the main venv's interpreter); each "
        "bot's output goes to one log file per bot under the native backend and "
        "supervisord (10 MiB, 3 backups), to the journal under systemd.",
        "",
    ]
    return lines


def _fig(summ: dict[str, Any], size: str, sup: str, key: str) -> float | None:
    fig = summ.get(size, {}).get(sup, {}).get(key)
    return None if not fig or not fig["n"] else float(fig["median"])


def _sd_notes(results: dict[str, Any], summ: dict[str, Any], delay_ms: float) -> list[str]:
    """What the systemd figures say, from the figures themselves."""
    size = _target_size(summ, "systemd")
    if size is None:
        return []
    lines = ["### systemd backend", ""]
    rss_sd = _fig(summ, size, "systemd", "rss_ready_mib")
    rss_native = _fig(summ, size, "ours", "rss_ready_mib")
    if rss_sd is not None and rss_native is not None:
        lines.append(
            f"- Memory at {size} bots: {rss_sd:.1f} MiB of RSS on the systemd backend against "
            f"{rss_native:.1f} MiB on the native one ({rss_sd - rss_native:+.1f} MiB). "
            + SD_MEMORY_WHY
        )
    units = _fig(summ, size, "systemd", "startup_units_s")
    native = _fig(summ, size, "ours", "startup_s")
    ready = _fig(summ, size, "systemd", "startup_s")
    if units is not None and native is not None and ready is not None:
        lines.append(
            f"- Start at {size} bots: every unit active {units:.2f} s after `systemctl start`, "
            f"the supervisor's last `ready` line at {ready:.2f} s; the native backend has "
            f"every bot ready {native:.2f} s after its launch. " + SD_START_WHY
        )
    fork = _fig(summ, size, "systemd", "crash_fork_overhead_ms")
    active = _fig(summ, size, "systemd", "crash_unit_active_ms")
    fork_native = _fig(summ, size, "ours", "crash_fork_overhead_ms")
    if fork is not None and active is not None and fork_native is not None:
        lines.append(
            f"- Crash to ready at {size} bots: the new process appears {fork:.1f} ms beyond "
            f"the {delay_ms:g} ms delay (native: {fork_native:.1f} ms) and the unit is active "
            f"again {active:.0f} ms after the kill. " + SD_CRASH_WHY
        )
    net = _fig(summ, size, "systemd", "cli_status_net_ms")
    cli_native = _fig(summ, size, "ours", "cli_status_ms")
    if net is not None and cli_native is not None:
        lines.append(
            f"- `kissbotctl status` at {size} bots: {net:.1f} ms inside the sandbox against "
            f"{cli_native:.1f} ms with the native backend: "
            "the client's start-up dominates both, the request itself is the socket row."
        )
    troubled = sorted(
        (s for s in summ if (_fig(summ, s, "systemd", "supervisor_restarts") or 0) > 0),
        key=int,
    )
    if troubled:
        restarts = ", ".join(
            f"{_fig(summ, s, 'systemd', 'supervisor_restarts'):.0f} at {s} bots" for s in troubled
        )
        lines.append(
            f"- The supervisor was restarted by systemd during the start (medians: {restarts})."
            " " + SD_LIMITS_WHY
        )
    lines.append("- " + SD_WAKEUPS)
    return [*lines, ""]


# What was found by looking, not measured by the run: kept apart from the code that
# fills in the figures, and to be checked again when the backend changes.
SD_MEMORY_WHY = ""
SD_START_WHY = ""
SD_CRASH_WHY = ""
SD_LIMITS_WHY = ""
SD_WAKEUPS = (
    "Idle wake-ups: `WatchdogSec=30` in the shipped unit makes the supervisor send "
    "`WATCHDOG=1` every 15 s; nothing else wakes it while the fleet idles (unit state "
    "comes as D-Bus signals, which an idle fleet does not send)."
)


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
