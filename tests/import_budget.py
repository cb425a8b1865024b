"""What the resident supervisor may import, per mode, and why: the memory design as a test.

The daemon is 14.8 MiB with 100 bots because of what it does NOT import:
``import asyncio`` alone is 19.5 MiB, ``typing`` and ``dataclasses`` cost
about 1 MiB, PyYAML 1.6 MiB (the config is parsed in a child for that reason),
cryptography's native library 6.6 MiB (tokens are decrypted in a child too),
``subprocess`` 0.6 MiB. A module, once imported, stays for the daemon's whole
life. Nothing but a benchmark would notice one coming back through an innocent
``import``, so the process tests run the real daemon with
``PYTHONPROFILEIMPORTTIME=1`` (every import, at any time of its life, is
written to its stderr), drive it through start-up, status, metrics, a reload
and a restart, and hold what it imported to the budgets below.

Budgets name top-level modules of the standard library (``json`` covers
``json.decoder``), and every other distribution's modules by their top-level
name too; what a budgeted library imports for itself is charged to it. Our
own modules are free except those a mode must never load. What the
interpreter imports for itself (``site``, ``encodings``, a ``sitecustomize``)
is measured, not listed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterable

# Everything the daemon imports in any mode, with the module that wants it.
COMMON: dict[str, str] = {
    "__future__": "annotations, in every module of ours",
    "argparse": "the command line (it brings gettext and warnings)",
    "gettext": "argparse's messages",
    "warnings": "argparse and pathlib",
    "locale": "gettext",
    "pathlib": "paths of the workdir (it brings fnmatch, ntpath, urllib.parse)",
    "fnmatch": "pathlib's globbing",
    "ntpath": "pathlib imports both path flavours",
    "urllib": "pathlib's file URIs (urllib.parse, which brings ipaddress)",
    "ipaddress": "urllib.parse",
    "errno": "error codes of system calls",
    "re": "config checks (logins, sizes) and placeholders",
    "_sre": "re's engine",
    "enum": "re, signal and socket constants",
    "functools": "enum, re",
    "operator": "enum, collections",
    "collections": "functools (it brings keyword, reprlib, heapq)",
    "keyword": "collections.namedtuple",
    "reprlib": "collections",
    "itertools": "collections",
    "copyreg": "re",
    "types": "enum",
    "contextlib": "the daemon's clean-up of sockets and files",
    "math": "settings: finite numbers",
    "signal": "SIGTERM, SIGHUP, SIGCHLD, signal names in exit reasons",
    "socket": "the control socket, the notify socket, the hub check",
    "selectors": "socket imports it (the loop itself uses select.epoll)",
    "select": "the event loop (epoll)",
    "array": "socket, for passing descriptors",
    "struct": "SO_PEERCRED on the control socket, inotify events",
    "grp": "the operators' group for the control socket",
    "pwd": "the bots' user",
    "heapq": "the loop's timers",
    "json": "the control protocol, status, events",
    "ctypes": "inotify, prctl, pidfd: system calls the os module lacks",
    "string": "command templates ({channel}, {config}, ...)",
    "fcntl": "locks (pids/CH.lock), non-blocking descriptors",
    "resource": "descriptor limits of the children",
    "gc": "the daemon trims its heap after a start burst",
    "time": "the monotonic clock",
    "os": "everything",
    "stat": "file types of what the workdir holds",
    "io": "the interpreter's own",
    "sdnotify": "the supervisor's own READY=1 and WATCHDOG=1 when systemd runs it",
    "abc": "collections.abc",
}

# Our modules that a mode must never load (what they would cost, or why not).
NEVER_OURS: dict[str, str] = {
    "kissbot_supervisor.tokens.db": "read in the token worker (tokens/worker.py), a child",
    "kissbot_supervisor.cli.render": "kissbotctl's tables",
    "kissbot_supervisor.cli.client": "kissbotctl's side of the socket",
    "kissbot_supervisor.cli.logs": "kissbotctl logs (systemd-python's journal reader)",
    "kissbot_supervisor.cli.ctl": "kissbotctl",
    "kissbot_supervisor.cli.shell": "kissbotctl shell (readline)",
    "kissbot_supervisor.cli.top": "kissbotctl top (termios, select)",
    "kissbot_supervisor.demo": "the demo programs",
}
NATIVE_NEVER_OURS: dict[str, str] = {
    "kissbot_supervisor.tokens.db": "read in the token worker (tokens/worker.py), a child",
    **NEVER_OURS,
    "kissbot_supervisor.backends.systemd": "the systemd backend and jeepney",
}

# What YAML token mode adds on the native backend: nothing.
NATIVE: dict[str, str] = dict(COMMON)

# YAML token mode with the hub and a kissbot.db, hub.ready: db: KissBot's hub reads
# its token from the DB in both token modes, so the token gate reads the hub's there
# too (in the token worker, a child); hub.ready: db reads hub_state in the daemon,
# through runtime/sqlite_ro.py.
NATIVE_HUB_DB: dict[str, str] = {
    **NATIVE,
    "sqlite3": "hub_state in kissbot.db (hub.ready: db; read-only)",
    "datetime": "sqlite3",
}

# DB mode (supervisor.use_db): the daemon checks the key file and nothing more of
# the DB itself. A short-lived child, the token worker (tokens/worker.py), reads
# the token states from kissbot.db, checks that the tokens decrypt, and writes a
# credential file for a process that asks for one. cryptography (6.6 MiB for
# good: DB mode cost 26 MiB against 16), hmac and hashlib, which Fernet brings,
# and sqlite3 (1.5 MiB with a connection) stay out of the daemon.
DB: dict[str, str] = {
    **COMMON,
    "binascii": "the key file's check (url-safe base64 of 32 bytes; built in)",
}
# Never in the daemon in DB mode: what reading the DB and decrypting need, which
# only the token worker loads.
DECRYPTION = ("cryptography", "cffi", "_cffi_backend", "hmac", "hashlib", "base64", "sqlite3")


# The systemd backend talks D-Bus with jeepney (pure Python).
SYSTEMD: dict[str, str] = {
    **COMMON,
    "jeepney": "D-Bus messages to systemd",
    "typing": "jeepney.auth's own import (0.4 MiB; ours are for the type checker only)",
    "zlib": "a digest (crc32) of a unit's properties while its start is answered",
    "base64": "jeepney",
    "binascii": "base64",
}
SYSTEMD_NEVER_OURS: dict[str, str] = {
    "kissbot_supervisor.tokens.db": "read in the token worker (tokens/worker.py), a child",
    **NEVER_OURS,
    "kissbot_supervisor.backends.native.backend": "the native backend",
    "kissbot_supervisor.backends.native.spawner": "the native backend's fork/exec",
}


def _brought_by_a_budgeted_library(
    name: str, modules: dict[str, str], budget: dict[str, str]
) -> bool:
    """Whether ``name`` came in with a budgeted library's own imports: charged to
    that library (cryptography 38 brings threading, inspect and email; 41+ do not)."""
    seen = set()
    while (name := modules.get(name, "")) and name not in seen:
        seen.add(name)
        top = name.split(".")[0]
        if top in budget and top not in sys.stdlib_module_names:
            return True
    return False


def imported(lines: Iterable[str]) -> dict[str, str]:
    """Module names from ``-X importtime`` output, each with the module whose
    import brought it in ("" at top level); without failed attempts (``nt``,
    ``_winapi``: the import system tries them and moves on).

    The output is a tree written children first: an import's parent is the next
    line indented less."""
    entries = []
    for line in lines:
        if line.startswith("import time:") and line.count("|") == 2:
            field = line.rsplit("|", 1)[1].rstrip("\n")
            name = field.strip()
            if name != "imported package":
                entries.append((len(field) - len(field.lstrip()), name))
    found: dict[str, str] = {}
    for i, (depth, name) in enumerate(entries):
        if name in found or not _exists(name):
            continue
        parent = next((n for d, n in entries[i + 1 :] if d < depth), "")
        found[name] = parent
    return found


def _exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def interpreter_baseline() -> set[str]:
    """What this interpreter imports for ``pass``: not the daemon's doing."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    return set(imported(out.splitlines()))


def over_budget(
    modules: dict[str, str], budget: dict[str, str], never_ours: dict[str, str]
) -> list[str]:
    """One sentence per module outside the budget; empty when within it."""
    baseline = {m.split(".")[0] for m in interpreter_baseline()}
    problems = []
    for name in sorted(modules):
        top = name.split(".")[0]
        by = f"imported by {modules[name] or 'the program'}"
        if top == "kissbot_supervisor":
            for banned, why in never_ours.items():
                if name == banned or name.startswith(banned + "."):
                    problems.append(f"{name} must not be loaded in this mode: {why} ({by})")
            continue
        if top in budget or top in baseline or top.lstrip("_") in budget:
            continue
        if _brought_by_a_budgeted_library(name, modules, budget):
            continue
        problems.append(f"{name} is not in the budget ({by})")
    return problems
