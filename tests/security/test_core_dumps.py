"""Tokens must not end up in a core dump: the daemon makes itself non-dumpable first."""

from __future__ import annotations

import subprocess
import sys

# prctl(3, ...) in the probes: PR_GET_DUMPABLE.


def test_the_daemon_is_not_dumpable_and_its_children_are() -> None:
    """The same start-up call the daemon makes, then a child exec'd from it."""
    probe = (
        "import ctypes, subprocess, sys\n"
        "from kissbot_supervisor.runtime.resources import make_undumpable\n"
        "libc = ctypes.CDLL(None)\n"
        "before = libc.prctl(3, 0, 0, 0, 0)\n"
        "make_undumpable()\n"
        "after = libc.prctl(3, 0, 0, 0, 0)\n"
        "child = subprocess.run([sys.executable, '-c', 'import ctypes; "
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))'], capture_output=True, text=True)\n"
        "print(before, after, child.stdout.strip())\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "0", "1"]


def test_make_supervisor_calls_it_before_reading_the_config() -> None:
    """The daemon's own start: a config that cannot be read still finds it non-dumpable."""
    probe = (
        "import ctypes, sys\n"
        "from pathlib import Path\n"
        "from kissbot_supervisor.daemon.launch import LaunchOptions, StartupError\n"
        "from kissbot_supervisor.daemon.startup import make_supervisor\n"
        "try:\n"
        "    make_supervisor(LaunchOptions(Path('/nonexistent'), 'none.yaml', {}))\n"
        "except StartupError:\n"
        "    pass\n"
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
