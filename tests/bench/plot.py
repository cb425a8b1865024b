# mypy: ignore-errors
"""Draws ``docs/benchmarks.png`` from ``docs/benchmarks.json``.

Runs in the benchmark's own venv (``.bench/venv``), the only place matplotlib
is installed: ``.bench/venv/bin/python tests/bench/plot.py IN.json OUT.png``.
It reads only the JSON, so it imports nothing from the project.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {"ours": "#1f77b4", "supervisord": "#d62728", "systemd": "#2ca02c"}
NAMES = {
    "ours": "kissbot-supervisor (native)",
    "supervisord": "supervisord",
    "systemd": "kissbot-supervisor (systemd)",
}
SHORT = {"ours": "nat", "supervisord": "supd", "systemd": "sd"}
CONTENDERS = tuple(COLOURS)

# (figure key, title, unit, target line(s) or None: the startup targets are 3 s for the
# native backend, 2 s for the systemd one)
LINES = (
    ("rss_ready_mib", "Supervisor RSS, all ready", "MiB", 16.0),
    ("uss_ready_mib", "Supervisor USS, all ready", "MiB", None),
    ("idle_cpu_pct_ns", "Idle CPU (schedstat)", "%", 0.1),
    ("idle_wakeups_per_s", "Idle wake-ups", "context switches/s", None),
    ("startup_s", "Launch → all ready (supervisord: RUNNING)", "s", (3.0, 2.0)),
    ("cli_status_ms", "status command wall time (systemd: through nsenter)", "ms", 100.0),
)
CRASH = (
    ("crash_quiet", "fork_s", "SIGKILL → new bot forked (unobserved)"),
    ("crash_quiet", "bot_ready_s", "SIGKILL → bot ready again (pids/CH.ready, unobserved)"),
)


def line_panel(ax, summary, sizes, key, title, unit, target):
    for sup in CONTENDERS:
        xs, med, low, high = [], [], [], []
        for size in sizes:
            fig = summary.get(str(size), {}).get(sup, {}).get(key)
            if not fig or not fig["n"]:
                continue
            xs.append(size)
            med.append(fig["median"])
            low.append(fig["median"] - fig["min"])
            high.append(fig["max"] - fig["median"])
        if xs:
            ax.errorbar(
                xs,
                med,
                yerr=[low, high],
                marker="o",
                capsize=4,
                color=COLOURS[sup],
                label=NAMES[sup],
            )
    targets = target if isinstance(target, tuple) else () if target is None else (target,)
    for value in targets:
        ax.axhline(value, color="grey", linestyle="--", linewidth=1, label="target")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("bots")
    ax.set_ylabel(unit)
    ax.set_xticks(sizes)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def crash_panel(ax, runs, sizes, series, field, title, delay_ms):
    data, labels, colours = [], [], []
    for size in sizes:
        for sup in CONTENDERS:
            values = [
                s[field] * 1000
                for r in runs
                if r["size"] == size and r["supervisor"] == sup
                for s in r[series]
                if s.get(field) is not None
            ]
            if values:
                data.append(values)
                labels.append(f"{size}\n{SHORT[sup]}")
                colours.append(COLOURS[sup])
    if data:
        box = ax.boxplot(data, patch_artist=True, whis=(0, 100))
        for patch, colour in zip(box["boxes"], colours, strict=True):
            patch.set_facecolor(colour)
            patch.set_alpha(0.5)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.axhline(delay_ms, color="grey", linestyle=":", linewidth=1, label="our restart delay")
    ax.axhline(delay_ms + 20, color="grey", linestyle="--", linewidth=1, label="delay + 20 ms")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("ms (log)")
    ax.grid(alpha=0.3, which="both")


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: plot.py IN.json OUT.png\n")
        return 2
    results = json.loads(Path(argv[0]).read_text())
    summary = results["summary"]
    sizes = results["params"]["sizes"]
    delay_ms = results["params"]["restart_delay_s"] * 1000
    fig, axes = plt.subplots(2, 4, figsize=(20, 9))
    flat = axes.flatten()
    for ax, (key, title, unit, target) in zip(flat, LINES, strict=False):
        line_panel(ax, summary, sizes, key, title, unit, target)
    for ax, (series, field, title) in zip(flat[len(LINES) :], CRASH, strict=True):
        crash_panel(ax, results["runs"], sizes, series, field, title, delay_ms)
    flat[0].legend(fontsize=8)
    flat[-1].legend(fontsize=8, loc="center right")
    m = results["machine"]
    fig.suptitle(
        f"kissbot-supervisor (native, systemd) vs supervisord — {m['cpu_model']}, "
        f"{m['logical_cpus']} CPUs, "
        f"Python {m['python']} — {results['date']} — median, bars min–max over "
        f"{results['params']['repeats']} repeats",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(argv[1], dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
