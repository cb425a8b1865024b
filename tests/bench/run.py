"""``make bench``: kissbot-supervisor (native and systemd backends) against supervisord.

Same machine, same run. For each fleet size and repeat, each contender in turn
(the order rotates between repeats) runs the same quiet demo bots in a
temporary directory:

1. launch, and time until every bot is ready (supervisord: RUNNING);
2. RSS/USS of the supervisor process once all are ready;
3. an idle window: its CPU time and context switches (wake-ups), then RSS/USS again;
4. the status command's wall time (the installed client as a subprocess) and
   one status round trip over the socket;
5. SIGKILL of distinct random bots, each timed until it is back;
6. hang detection: the config reloaded with ``bot.watchdog_sec`` (every bot
   restarts with the watchdog; it is off before, as its pings would wake the
   supervisor in the idle window), then distinct random bots SIGSTOPped one at
   a time, each timed until it is killed and until its new copy is ready.
   supervisord has no watchdog: it sits this phase out.

The contenders: ``ours`` (native backend, a child of this process),
``supervisord`` and ``systemd``: our supervisor as ``systemctl start
kissbot-supervisor`` in a systemd 252 booted for the run in a namespace
(``ours_systemd.py``, ``tests/systemd_sandbox``), its bots transient
``Type=notify`` units. supervisord stops about one bot a second, so it sits
out the sizes above ``--supervisord-max-size``; one more systemd run with the
EventSub hub enabled is made at ``--hub-size``.

Raw figures go to ``docs/benchmarks.json``, the report to
``docs/benchmarks.md`` and a chart to ``docs/benchmarks.png`` (drawn by
``plot.py`` with matplotlib in the benchmark's own venv, ``.bench/venv``,
where supervisord is installed too).

Usage: ``.venv/bin/python tests/bench/run.py [--sizes 30,100,300] [--repeats 3]
[--idle-seconds 60] [--contenders ours,supervisord,systemd] [--quick]
[--out docs/benchmarks.md]`` (the systemd contender needs root).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil

if not __package__:  # run as a script: make ``bench`` importable from tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import fleet_memory, procstat, report
from bench.fleets import CLI_TIMEOUT, BenchError, Fleet, bench_channels, clean_env, log
from bench.ours import Ours
from bench.ours_systemd import FALLBACK_RESTART_SEC, IncompleteStop, OursSystemd
from bench.ours_systemd import available as systemd_unavailable
from bench.peer import Supervisord
from systemd_sandbox.sandbox import SandboxError, SystemdSandbox

REPO = Path(__file__).resolve().parents[2]
BENCH_VENV = REPO / ".bench" / "venv"
BENCH_PACKAGES = ("supervisor", "matplotlib")
PIP_TIMEOUT = 900
CONTENDERS = (Ours.name, Supervisord.name, OursSystemd.name)
QUIET_WINDOW = 2.0


# --- arguments --------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 30,100, got {text!r}") from None
    if not sizes or any(size < 1 or size > 999 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be 1-999 bots, got {text!r}")
    return sorted(set(sizes))


def _contenders(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(CONTENDERS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"contenders are {','.join(CONTENDERS)}, got {text!r}")
    return [name for name in CONTENDERS if name in names]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tests/bench/run.py",
        description="Benchmark kissbot-supervisor (native and systemd backends) "
        "against supervisord.",
    )
    parser.add_argument(
        "--sizes", type=_sizes, default=[30, 100, 300], help="fleet sizes (30,100,300)"
    )
    parser.add_argument(
        "--contenders",
        type=_contenders,
        default=list(CONTENDERS),
        help=f"who runs ({','.join(CONTENDERS)}); systemd is left out where it cannot boot",
    )
    parser.add_argument(
        "--supervisord-max-size",
        type=int,
        default=100,
        help="supervisord sits out larger sizes: it stops one bot a second (100)",
    )
    parser.add_argument(
        "--hub-size",
        type=int,
        default=100,
        help="one more systemd run, with the hub, at this size (100; 0: none)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per size and supervisor (3)")
    parser.add_argument(
        "--idle-seconds", type=float, default=60.0, help="length of the idle window (60)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short check: sizes 30, repeats 1, idle 10 s"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"), help="report")
    parser.add_argument("--crashes", type=int, default=10, help="bots SIGKILLed per run (10)")
    parser.add_argument(
        "--hangs", type=int, default=10, help="bots SIGSTOPped under a watchdog per run (10; 0: no)"
    )
    parser.add_argument(
        "--hang-watchdog",
        type=float,
        default=1.0,
        help="bot.watchdog_sec for the hang phase (1.0); bots ping every half of it",
    )
    parser.add_argument(
        "--restart-delay", type=float, default=0.1, help="our restart.delay_sec (0.1)"
    )
    parser.add_argument(
        "--status-runs", type=int, default=20, help="timed status commands per run (20)"
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=2.0,
        help="pause between all-ready and the idle window, for the last output to drain (2)",
    )
    parser.add_argument(
        "--quiet-busy",
        type=float,
        default=0.25,
        help="before each run, wait until at most this share of all CPUs is busy (0.25)",
    )
    parser.add_argument(
        "--quiet-timeout", type=float, default=300.0, help="... for at most this long (300 s)"
    )
    parser.add_argument("--seed", type=int, default=20240601, help="which bots get killed")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.idle_seconds, args.hub_size = [30], 1, 10.0, 0
    if args.repeats < 1 or args.crashes < 1 or args.status_runs < 1 or args.idle_seconds <= 0:
        parser.error("--repeats, --crashes, --status-runs and --idle-seconds must be positive")
    if args.hangs < 0 or args.hang_watchdog <= 0:
        parser.error("--hangs must be 0 or more and --hang-watchdog positive")
    return args


# --- the benchmark's own venv -------------------------------------------------


def ensure_bench_venv(venv: Path = BENCH_VENV) -> Path:
    """``.bench/venv`` with supervisor and matplotlib from PyPI; returns its bin directory."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import supervisor, matplotlib"]
    if python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return venv / "bin"
    log(f"creating {venv} (pip install {' '.join(BENCH_PACKAGES)})")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True, timeout=PIP_TIMEOUT)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *BENCH_PACKAGES],
        check=True,
        timeout=PIP_TIMEOUT,
    )
    return venv / "bin"


def bench_versions(bench_bin: Path) -> dict[str, str]:
    def output(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        return (done.stdout or done.stderr).strip()

    ours = output([str(Path(sys.executable).parent / "kissbot-supervisor"), "--version"])
    return {
        "kissbot_supervisor": ours.split()[-1] if ours else "?",
        "supervisord": output([str(bench_bin / "supervisord"), "--version"]),
        "matplotlib": output(
            [str(bench_bin / "python"), "-c", "import matplotlib; print(matplotlib.__version__)"]
        ),
        "bench_python": output([str(bench_bin / "python"), "-c", "import sys; print(sys.version)"]),
    }


SNAPSHOT_TRIES = 5


def snapshot_source(into: Path) -> str:
    """Copy src/kissbot_supervisor to ``into`` and check that it imports; its digest.

    Every supervisor, bot and kissbotctl of the run then imports this copy
    (PYTHONPATH comes before the editable install's path), so edits to the work
    tree during a long run cannot mix versions. A copy taken in the middle of
    someone's edit fails the import check and is taken again.
    """
    package = REPO / "src" / "kissbot_supervisor"
    check = [
        sys.executable,
        "-c",
        "import kissbot_supervisor.cli.supervisor, kissbot_supervisor.cli.ctl, "
        "kissbot_supervisor.daemon.supervisor, kissbot_supervisor.demo.bot",
    ]
    env = {**clean_env(), "PYTHONPATH": str(into)}
    error = ""
    for attempt in range(SNAPSHOT_TRIES):
        target = into / "kissbot_supervisor"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__"))
        compiled = subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(target)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        done = subprocess.run(
            check, capture_output=True, text=True, env=env, timeout=60, check=False
        )
        if compiled.returncode == 0 and done.returncode == 0:
            digest = hashlib.sha256()
            for path in sorted(target.rglob("*.py")):
                digest.update(str(path.relative_to(into)).encode() + b"\0" + path.read_bytes())
            return digest.hexdigest()
        last = (compiled.stdout + done.stderr).strip().splitlines()[-1:]
        error = last[0] if last else "?"
        log(f"source snapshot {attempt + 1} does not import ({error}); again in 10 s")
        time.sleep(10)  # someone is editing src/: give them a moment
    raise BenchError(f"src/kissbot_supervisor does not import: {error}")


def source_state() -> dict[str, object]:
    """The commit measured, and whether src/ had changes not in it (read-only git)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else "?"

    return {
        "commit": git("rev-parse", "HEAD"),
        "src_changed_files": [
            line[3:] for line in git("status", "--porcelain", "src").splitlines()
        ],
    }


# --- one run ------------------------------------------------------------------


def time_commands(argv: list[str], runs: int) -> tuple[list[float], list[int]]:
    """Wall time (ms) of ``argv`` run ``runs`` times after one untimed warm-up; exit codes."""
    env = clean_env()
    subprocess.run(argv, stdout=subprocess.DEVNULL, env=env, timeout=CLI_TIMEOUT, check=False)
    times: list[float] = []
    codes: list[int] = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            argv, stdout=subprocess.DEVNULL, env=env, timeout=CLI_TIMEOUT, check=False
        )
        times.append((time.perf_counter() - start) * 1000)
        codes.append(done.returncode)
    return times, codes


def time_round_trips(fleet: Fleet, runs: int) -> list[float]:
    fleet.socket_status()  # warm-up: a first request may pay for lazy imports
    times: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        fleet.socket_status()
        times.append((time.perf_counter() - start) * 1000)
    return times


def crash_series(
    fleet: Fleet, rng: random.Random, count: int, watch_view: bool
) -> list[dict[str, Any]]:
    victims = rng.sample(fleet.channels, min(count, len(fleet.channels)))
    samples = []
    for channel in victims:
        sample = fleet.crash(channel, watch_view)
        samples.append(asdict(sample))
    return samples


def hang_series(fleet: Fleet, rng: random.Random, count: int) -> list[dict[str, Any]]:
    victims = rng.sample(fleet.channels, min(count, len(fleet.channels)))
    return [asdict(fleet.hang(channel)) for channel in victims]


HUB_RUN = "systemd_hub"


def make_fleet(
    kind: str, root: Path, size: int, args: argparse.Namespace, bench_bin: Path
) -> Fleet:
    channels = bench_channels(size)
    if kind == Ours.name:
        return Ours(root, channels, args.restart_delay)
    if kind in (OursSystemd.name, HUB_RUN):
        return OursSystemd(root, channels, args.restart_delay, args.snapshot, hub=kind == HUB_RUN)
    return Supervisord(root, channels, bench_bin)


def sample_others(fleet: Fleet) -> dict[str, procstat.Sample]:
    samples: dict[str, procstat.Sample] = {}
    for label, pid in fleet.others().items():
        try:
            samples[label] = procstat.sample(pid)
        except OSError:
            continue
    return samples


def idle_others(fleet: Fleet, before: dict[str, procstat.Sample]) -> dict[str, dict[str, Any]]:
    """The idle figures and memory of the fleet's other processes (systemd: PID 1, ...)."""
    figures: dict[str, dict[str, Any]] = {}
    for label, pid in fleet.others().items():
        if label not in before:
            continue
        try:
            figures[label] = {
                "idle": procstat.idle_figures(before[label], procstat.sample(pid)),
                "memory": procstat.memory(pid),
            }
        except (OSError, psutil.Error):
            continue
    return figures


def run_one(
    kind: str,
    size: int,
    repeat: int,
    args: argparse.Namespace,
    bench_bin: Path,
    result: dict[str, Any],
) -> dict[str, Any]:
    """One run; its figures go into ``result`` as they come (kept if a later step fails)."""
    root = Path(tempfile.mkdtemp(prefix=f"kissbot-bench-{kind}-"))
    fleet = make_fleet(kind, root, size, args, bench_bin)
    rng = random.Random(f"{args.seed}-{size}-{repeat}-{kind}")
    result.update({"supervisor": kind, "size": size, "repeat": repeat})
    result["loadavg_before"] = os.getloadavg()[0]
    try:
        fleet.prepare()
        if isinstance(fleet, OursSystemd):
            result["systemd_version"] = fleet.version
        at_launch = sample_others(fleet)
        fleet.launch()
        result.update(fleet.await_fleet())
        pid = fleet.pid
        # CPU time the supervisor process has used since it started: the start's cost.
        result["cpu_at_ready_s"] = procstat.cpu_ns(pid) / 1e9
        if at_launch:  # and what the start cost the others (systemd: PID 1, journald, bus)
            result["others_startup_cpu_s"] = {
                label: (procstat.sample(fleet.others()[label]).ns - before.ns) / 1e9
                for label, before in at_launch.items()
            }
        result["memory_ready"] = procstat.memory(pid)
        result["bots_rss_mib"] = procstat.tree_rss_mib(list(fleet.bot_pids().values()))
        log(
            f"{fleet.label} N={size}: all ready in {result['startup_s']:.3f} s, "
            f"RSS {result['memory_ready']['rss_mib']:.1f} MiB; idle {args.idle_seconds:g} s"
        )
        # Not a synchronisation: the last "joined" lines drain before the window opens.
        time.sleep(args.settle_seconds)
        others = sample_others(fleet)
        before = procstat.sample(pid)
        time.sleep(args.idle_seconds)  # the idle window itself
        after = procstat.sample(pid)
        if others:
            result["others"] = idle_others(fleet, others)
        fleet.check_alive()
        result["idle"] = procstat.idle_figures(before, after)
        result["memory_idle"] = procstat.memory(pid)
        log(
            f"{fleet.label} N={size}: idle CPU {result['idle']['cpu_pct_ns']:.4f} %, "
            f"{result['idle']['wakeups_per_s']:.3f} wake-ups/s; timing status"
        )
        result["cli_status_ms"], result["cli_status_rc"] = time_commands(
            fleet.cli_status_argv(), args.status_runs
        )
        if set(result["cli_status_rc"]) != {0}:
            log(f"{fleet.label}: status command exit codes {sorted(set(result['cli_status_rc']))}")
        baseline = fleet.cli_baseline_argv()
        if baseline is not None:  # nsenter's own cost, to take out of the status command's
            result["cli_baseline_ms"], _codes = time_commands(baseline, args.status_runs)
        result["socket_status_ms"] = time_round_trips(fleet, args.status_runs)
        result["memory_after_status"] = procstat.memory(pid)
        log(f"{fleet.label} N={size}: killing {args.crashes} bots")
        if isinstance(fleet, Supervisord):
            # Unobserved first (only /proc and pids/), then watched through its API.
            result["crash_quiet"] = crash_series(fleet, rng, args.crashes, watch_view=False)
            result["crash_observed"] = crash_series(fleet, rng, args.crashes, watch_view=True)
            states = {name: state for name, (state, _pid) in fleet.states().items()}
        else:
            # Reading our log lines does not disturb it: one series serves both.
            samples = crash_series(fleet, rng, args.crashes, watch_view=True)
            result["crash_quiet"] = result["crash_observed"] = samples
            assert isinstance(fleet, Ours)
            states = fleet.status_states()
        result["memory_end"] = procstat.memory(pid)
        not_up = {n: s for n, s in states.items() if s not in ("running", "RUNNING")}
        if not_up:  # recorded (the report lists it), and the stop is still timed
            log(f"{fleet.label} N={size}: not running at the end: {not_up}")
            result["not_running_at_end"] = not_up
        fleet.check_alive()
        if args.hangs and fleet.has_watchdog:
            log(
                f"{fleet.label} N={size}: reloading with a {args.hang_watchdog:g} s watchdog; "
                f"stopping {args.hangs} bots with SIGSTOP"
            )
            result["hang_reload_s"] = fleet.enable_watchdog(args.hang_watchdog)
            result["hang"] = hang_series(fleet, rng, args.hangs)
            fleet.check_alive()
        fleet.remember_children()
        log(f"{fleet.label} N={size}: stopping")
        try:
            result["stop_s"] = fleet.stop()
            result["bots_left_after_stop"] = 0
        except IncompleteStop as e:  # the figures before the stop stand
            log(f"{fleet.label} N={size}: {e}")
            result["bots_left_after_stop"] = e.left
            result["stop_error"] = str(e)
    finally:
        if isinstance(fleet, OursSystemd):
            with contextlib.suppress(SandboxError, OSError, subprocess.SubprocessError):
                saved = fleet.save_journal(size, repeat)
                if saved is not None:
                    result["journal"] = str(saved.relative_to(REPO))
        fleet.close()
    return result


def run_or_record(
    kind: str, size: int, repeat: int, args: argparse.Namespace, bench_bin: Path
) -> dict[str, Any]:
    """One run once the machine is quiet; a run that fails is recorded with its error."""
    waited, busy = procstat.wait_quiet(args.quiet_busy, QUIET_WINDOW, args.quiet_timeout)
    if waited > 2 * QUIET_WINDOW:
        log(f"waited {waited:.0f} s for a quiet machine ({busy:.0%} of the CPUs busy)")
    result: dict[str, Any] = {"quiet_wait_s": waited, "machine_busy_before": busy}
    try:
        return run_one(kind, size, repeat, args, bench_bin, result)
    except BenchError as e:
        log(f"N={size} {kind}: run failed: {e}")
        # What was measured before the failure stays in the JSON; the report leaves it out.
        return {**result, "supervisor": kind, "size": size, "repeat": repeat, "error": str(e)}


# --- the whole benchmark ---------------------------------------------------------


def run_all(
    args: argparse.Namespace, bench_bin: Path, partial: Path, digest: str
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": shlex.join([".venv/bin/python", "tests/bench/run.py", *sys.argv[1:]]),
        "machine": {
            **procstat.machine(),
            "python_baseline_rss_mib": procstat.interpreter_baseline_mib(),
        },
        "versions": bench_versions(bench_bin),
        "source": {**source_state(), "snapshot_sha256": digest},
        "params": {
            "sizes": args.sizes,
            "repeats": args.repeats,
            "idle_seconds": args.idle_seconds,
            "settle_seconds": args.settle_seconds,
            "crashes": args.crashes,
            "hangs": args.hangs,
            "hang_watchdog_s": args.hang_watchdog,
            "restart_delay_s": args.restart_delay,
            "status_runs": args.status_runs,
            "seed": args.seed,
            "contenders": args.contenders,
            "supervisord_max_size": args.supervisord_max_size,
            "hub_size": args.hub_size if OursSystemd.name in args.contenders else 0,
            "systemd_fallback_restart_s": FALLBACK_RESTART_SEC,
            "quiet_busy": args.quiet_busy,
            "quiet_timeout_s": args.quiet_timeout,
        },
        "runs": [],
    }
    kinds: list[str] = args.contenders
    for size in args.sizes:
        for repeat in range(args.repeats):
            # Rotate who goes first, so a slow drift of the machine hits all.
            shift = repeat % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                if kind == Supervisord.name and size > args.supervisord_max_size:
                    continue
                log(f"--- N={size} repeat {repeat + 1}/{args.repeats}: {kind}")
                results["runs"].append(run_or_record(kind, size, repeat, args, bench_bin))
                partial.write_text(json.dumps(results, indent=1))
    if OursSystemd.name in kinds and args.hub_size > 0:
        log(f"--- N={args.hub_size}: systemd with the hub (one run)")
        results["runs"].append(run_or_record(HUB_RUN, args.hub_size, 0, args, bench_bin))
        partial.write_text(json.dumps(results, indent=1))
    results["summary"] = report.summarise(results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through every finally: clean-up runs

    signal.signal(signal.SIGTERM, on_term)
    out: Path = args.out if args.out.is_absolute() else REPO / args.out
    if OursSystemd.name in args.contenders:
        reason = systemd_unavailable()
        if reason is not None:
            log(f"systemd contender left out: {reason}")
            args.contenders.remove(OursSystemd.name)
        else:
            SystemdSandbox.cleanup_leftovers()  # of killed runs only: live owners' stay
    bench_bin = ensure_bench_venv()
    partial = REPO / ".bench" / "partial.json"
    snapshot = Path(tempfile.mkdtemp(prefix="kissbot-bench-src-"))
    args.snapshot = snapshot
    try:
        digest = snapshot_source(snapshot)
        # Inherited by every process the run starts (clean_env copies os.environ).
        os.environ["PYTHONPATH"] = str(snapshot)
        results = run_all(args, bench_bin, partial, digest)
    except BenchError as e:
        log(f"failed: {e}")
        return 1
    finally:
        os.environ.pop("PYTHONPATH", None)
        shutil.rmtree(snapshot, ignore_errors=True)
    json_path, png_path = out.with_suffix(".json"), out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    chart = None
    if not args.no_plot:
        plot = [str(bench_bin / "python"), str(Path(__file__).with_name("plot.py"))]
        subprocess.run([*plot, str(json_path), str(png_path)], check=True, timeout=300)
        chart = png_path.name
    text = report.markdown(results, chart)
    memory_json = out.with_name("fleet-memory.json")
    if memory_json.exists():  # keep the fleet-memory section (make bench-memory) as it was
        text = fleet_memory.splice(text, fleet_memory.section(json.loads(memory_json.read_text())))
    out.write_text(text)
    log(f"wrote {out}, {json_path}" + (f", {png_path}" if chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
