"""What the benchmarks read about a live process, the machine, and small statistics.

Everything here reads ``/proc`` (or psutil, which reads ``/proc``) and never
talks to the measured process, so measuring does not wake it up.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- one process ------------------------------------------------------------


def _tasks(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process, in clock ticks (``/proc/PID/stat``)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()
    # After the command: state is field 3, so utime (14) and stime (15) are 11 and 12 here.
    return int(fields[11]) + int(fields[12])


def cpu_ns(pid: int) -> int:
    """Time on a CPU in nanoseconds, summed over the threads (``schedstat``, ns precision)."""
    total = 0
    for tid in _tasks(pid):
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches, summed over the threads."""
    voluntary = involuntary = 0
    for tid in _tasks(pid):
        try:
            lines = Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition(":")
            if key == "voluntary_ctxt_switches":
                voluntary += int(value)
            elif key == "nonvoluntary_ctxt_switches":
                involuntary += int(value)
    return voluntary, involuntary


@dataclass(frozen=True)
class Sample:
    """One reading of a process's CPU counters at a monotonic time."""

    at: float
    ticks: int
    ns: int
    voluntary: int
    involuntary: int


def sample(pid: int) -> Sample:
    voluntary, involuntary = context_switches(pid)
    return Sample(time.monotonic(), cpu_ticks(pid), cpu_ns(pid), voluntary, involuntary)


def idle_figures(before: Sample, after: Sample) -> dict[str, float]:
    """CPU share and wake-ups between two samples of the same process."""
    wall = after.at - before.at
    switches = (after.voluntary - before.voluntary) + (after.involuntary - before.involuntary)
    return {
        "window_s": wall,
        "cpu_pct": 100.0 * (after.ticks - before.ticks) / CLK_TCK / wall,
        "cpu_pct_ns": 100.0 * (after.ns - before.ns) / 1e9 / wall,
        "cpu_ms": (after.ns - before.ns) / 1e6,
        "context_switches": float(switches),
        "voluntary": float(after.voluntary - before.voluntary),
        "involuntary": float(after.involuntary - before.involuntary),
        "wakeups_per_s": switches / wall,
    }


def wait_at_rest(pid: int, quiet: float = 0.05, timeout: float = 5.0) -> bool:
    """Wait until ``pid`` has not been scheduled for ``quiet`` seconds (False: timed out).

    Before a crash is timed, the supervisor must be asleep in its loop rather
    than finishing an earlier request, or the kill would catch it awake.
    """
    deadline = time.monotonic() + timeout
    last = context_switches(pid)
    since = time.monotonic()
    while True:
        time.sleep(quiet / 5)
        now = time.monotonic()
        current = context_switches(pid)
        if current != last:
            last, since = current, now
        elif now - since >= quiet:
            return True
        if now > deadline:
            return False


def memory(pid: int) -> dict[str, float]:
    """RSS, USS and PSS in MiB (``memory_full_info`` reads ``smaps``)."""
    info = psutil.Process(pid).memory_full_info()
    return {"rss_mib": info.rss / MIB, "uss_mib": info.uss / MIB, "pss_mib": info.pss / MIB}


def tree_rss_mib(pids: Sequence[int]) -> float:
    """The summed RSS of some processes (the bots), skipping the ones that are gone."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return total / MIB


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's list), without psutil's full scan."""
    found: list[int] = []
    for tid in _tasks(pid):
        try:
            found += [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return found


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rsplit(")", 1)[1].split()[0] != "Z"


# --- the machine ------------------------------------------------------------


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user and nice
    return total - idle, total


def machine_busy(window: float) -> float:
    """The share of all CPUs busy (0-1) over the next ``window`` seconds, whoever runs."""
    busy0, total0 = _cpu_times()
    time.sleep(window)
    busy1, total1 = _cpu_times()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_quiet(limit: float, window: float, timeout: float) -> tuple[float, float]:
    """Wait until the machine is at most ``limit`` busy over ``window`` s (or ``timeout``).

    Other work on a shared machine (a test suite, a build) skews start-up and latency
    figures. Returns (seconds waited, the last busy share).
    """
    started = time.monotonic()
    while True:
        busy = machine_busy(window)
        waited = time.monotonic() - started
        if busy <= limit or waited >= timeout:
            return waited, busy


def machine() -> dict[str, object]:
    """CPU model, cores, RAM, kernel and Python version, for the report."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_executable": sys.executable,
    }


def interpreter_baseline_mib(python: str = sys.executable) -> float | None:
    """RSS of a bare interpreter of ``python``, started and waiting on its stdin."""
    import subprocess

    proc = subprocess.Popen(
        [python, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "up":  # it has started: measure it
            return None
        return float(psutil.Process(proc.pid).memory_info().rss) / MIB
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


# --- statistics -------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, spread (min, max, IQR) and p90 of some figures."""
    if not values:
        nan = float("nan")
        return {"n": 0, "median": nan, "min": nan, "max": nan, "p25": nan, "p75": nan, "p90": nan}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "p25": percentile(values, 25),
        "p75": percentile(values, 75),
        "p90": percentile(values, 90),
    }
