"""Metrics: a snapshot of the fleet's figures, as Prometheus text and as a JSON line. Pure.

The daemon gathers the figures (its STATUS object, CPU times from /proc, the
core's counters, token expiry times) into a *snapshot* with :func:`snapshot`;
:func:`exposition` renders it in the Prometheus text exposition format 0.0.4
and :func:`log_line` as one line of the JSON-lines metrics log. Nothing here
reads a clock or a file, so the tests feed it plain dicts.

Every per-process metric carries the label ``process``: ``hub`` or the
channel login (logins have at least 4 characters, so ``hub`` is never a
channel); ``kissbot_state`` adds ``state``. A figure that is not known (no
PID, no expiry time) is left out rather than reported as 0. No token or
secret ever reaches a snapshot: it is built from STATUS, which holds token
*states* only, and from numbers.
"""

from __future__ import annotations

import json
import math

from ..core import Phase

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (metric, type, help, snapshot key): one family per per-process figure.
PROCESS_FAMILIES = (
    ("kissbot_up", "gauge", "1 when the process runs (it has a PID), else 0.", "up"),
    ("kissbot_ready", "gauge", "1 when the process is ready (state running), else 0.", "ready"),
    (
        "kissbot_wanted",
        "gauge",
        "1 when the process should run, 0 when it was stopped on purpose (stop, stop-all).",
        "want",
    ),
    (
        "kissbot_restarts_total",
        "counter",
        "Restarts of the process, automatic and requested (like systemd's NRestarts).",
        "restarts",
    ),
    (
        "kissbot_watchdog_timeouts_total",
        "counter",
        "Exits of the process caused by a watchdog timeout.",
        "watchdog_timeouts",
    ),
    (
        "kissbot_memory_bytes",
        "gauge",
        "Resident set size of the process's main PID, in bytes.",
        "rss_bytes",
    ),
    (
        "kissbot_cpu_seconds_total",
        "counter",
        "User and system CPU time of the process's current main PID (restarts from 0 "
        "with each new PID).",
        "cpu_seconds",
    ),
    (
        "kissbot_token_expiry_timestamp_seconds",
        "gauge",
        "When the token the process uses expires, in Unix time (absent when unknown).",
        "token_expiry",
    ),
)

# kissbot_state{process,state}: one sample per process and state, 1 for its current
# state and 0 for the others. All six are written, not only the current one, so
# that an alert on ``state="failed"`` has a series that goes from 0 to 1 (its
# ``for:`` clause and rate() then work) rather than one that appears from nothing.
STATE_FAMILY = (
    "kissbot_state",
    "gauge",
    "1 for the state the process is in (the label state), 0 for the others.",
)
STATES = tuple(str(phase) for phase in Phase)

SUPERVISOR_FAMILIES = (
    (
        "kissbot_supervisor_memory_bytes",
        "gauge",
        "Resident set size of the supervisor, in bytes.",
        "rss_bytes",
    ),
    (
        "kissbot_supervisor_cpu_seconds_total",
        "counter",
        "User and system CPU time of the supervisor.",
        "cpu_seconds",
    ),
    (
        "kissbot_supervisor_start_time_seconds",
        "gauge",
        "When the supervisor started, in Unix time.",
        "start_time",
    ),
    (
        "kissbot_supervisor_failing_alike_bots",
        "gauge",
        "Bots down (backing off or parked) with the same last words, when they are enough "
        "to be an outage rather than one bad bot (the failing-alike event); else 0.",
        "failing_alike",
    ),
)

BUILD_INFO_FAMILY = (
    "kissbot_supervisor_build_info",
    "gauge",
    "Always 1; the labels say which supervisor version and backend run.",
)


def family_names() -> tuple[str, ...]:
    """Every metric family the supervisor exports, in the order of the exposition:
    what the shipped alert rules and dashboard may use (docs/prometheus/)."""
    return (
        *(family[0] for family in PROCESS_FAMILIES),
        STATE_FAMILY[0],
        *(family[0] for family in SUPERVISOR_FAMILIES),
        BUILD_INFO_FAMILY[0],
    )


# Per-process keys of a snapshot (and of each entry in the metrics log), in order.
PROCESS_KEYS = (
    "name",
    "state",
    "want",
    "pid",
    "uptime_s",
    "restarts",
    "watchdog_timeouts",
    "rss_bytes",
    "cpu_seconds",
    "last_exit",
    "token_state",
    "token_expiry",
)


def _processes(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    procs: list[Mapping[str, Any]] = []
    hub = status.get("hub")
    if isinstance(hub, dict):
        procs.append(hub)
    procs.extend(b for b in status.get("bots") or () if isinstance(b, dict))
    return procs


def snapshot(
    status: Mapping[str, Any],
    *,
    time: float,
    start_time: float,
    supervisor_cpu: float | None,
    extras: Mapping[str, Mapping[str, Any]],
    failing_alike: int = 0,
) -> dict[str, Any]:
    """The figures of one moment: STATUS, plus ``extras`` per process name
    (``cpu_seconds``, ``watchdog_timeouts``, ``token_expiry``) and the number of
    bots failing alike (``Core.failing_alike``, 0 when none)."""
    sup = status.get("supervisor") or {}
    processes = []
    for proc in _processes(status):
        name = str(proc.get("name"))
        extra = extras.get(name, {})
        merged = {**proc, **extra}
        entry = {key: merged.get(key) for key in PROCESS_KEYS}
        entry["name"] = name
        entry["restarts"] = int(merged.get("restarts") or 0)
        entry["watchdog_timeouts"] = int(merged.get("watchdog_timeouts") or 0)
        processes.append(entry)
    return {
        "time": round(time, 3),
        "supervisor": {
            "pid": sup.get("pid"),
            "version": sup.get("version"),
            "backend": status.get("backend"),
            "start_time": round(start_time, 3),
            "uptime_s": sup.get("uptime_s"),
            "rss_bytes": sup.get("rss_bytes"),
            "cpu_seconds": supervisor_cpu,
            "summary": sup.get("summary"),
            "failing_alike": failing_alike,
        },
        "processes": processes,
    }


# --- the Prometheus text format ---------------------------------------------------


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed escaped, as the text format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _family(
    out: list[str], name: str, kind: str, help_text: str, samples: list[tuple[str, float]]
) -> None:
    out.append(f"# HELP {name} {escape_help(help_text)}")
    out.append(f"# TYPE {name} {kind}")
    out.extend(f"{name}{labels} {format_value(value)}" for labels, value in samples)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _process_value(proc: Mapping[str, Any], key: str) -> float | None:
    if key == "up":
        return 1 if proc.get("pid") is not None else 0
    if key == "ready":
        return 1 if proc.get("state") == "running" else 0
    if key == "want":
        return 1 if proc.get("want") is True else 0
    return _number(proc.get(key))


def _state_family(out: list[str], procs: Iterable[Mapping[str, Any]]) -> None:
    name, kind, help_text = STATE_FAMILY
    out.append(f"# HELP {name} {escape_help(help_text)}")
    out.append(f"# TYPE {name} {kind}")
    for proc in procs:
        # The process label is escaped once for its six lines.
        head = f'{name}{{process="{escape_label_value(str(proc.get("name")))}",state="'
        current = proc.get("state")
        out.extend(f'{head}{state}"}} {1 if state == current else 0}' for state in STATES)


def exposition(snap: Mapping[str, Any]) -> str:
    """The snapshot in the Prometheus text exposition format 0.0.4 (ends with a newline)."""
    out: list[str] = []
    procs = snap.get("processes") or []
    for name, kind, help_text, key in PROCESS_FAMILIES:
        samples = []
        for proc in procs:
            value = _process_value(proc, key)
            if value is not None:
                samples.append((_labels([("process", str(proc.get("name")))]), value))
        _family(out, name, kind, help_text, samples)
    _state_family(out, procs)
    sup = snap.get("supervisor") or {}
    for name, kind, help_text, key in SUPERVISOR_FAMILIES:
        value = _number(sup.get(key))
        _family(out, name, kind, help_text, [] if value is None else [("", value)])
    info = _labels(
        [("version", str(sup.get("version") or "")), ("backend", str(sup.get("backend") or ""))]
    )
    _family(out, *BUILD_INFO_FAMILY, [(info, 1)])
    return "\n".join(out) + "\n"


def log_line(snap: Mapping[str, Any]) -> bytes:
    """One line of the JSON-lines metrics log, newline included."""
    return json.dumps(snap, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
