"""A fresh Debian 12 booted with systemd in a container, for the package's end-to-end tests.

The root filesystem is built once and cached (``tools/debian-image``); each
machine runs on an overlay with a fresh upper layer, so runs never see each
other's changes. It boots with ``systemd-nspawn`` (``boot.sh``), and commands run
inside with ``nsenter`` into the container's PID 1, as root or as a user
(``runuser``). Readiness is systemd's own: ``/run/systemd/private`` exists and
``systemctl is-system-running --wait`` answers.

Nothing outlives :meth:`DebianMachine.close`: the container is powered off
(SIGRTMIN+4 to its PID 1), the overlay unmounted, the cgroups removed. If the
test process dies, the boot script dies with it (PR_SET_PDEATHSIG) and nspawn
takes the container down.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOOT = Path(__file__).with_name("boot.sh")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TIMEOUT = 60.0  # a boot takes under a second here; this bounds a broken one
COMMAND_TIMEOUT = 120.0

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


class MachineError(Exception):
    """The container could not be booted or a command in it failed."""


def unavailable_reason() -> str | None:
    """Why this machine cannot boot a container, or None."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("systemd-nspawn", "mmdebstrap", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"no `{tool}` (apt-get install systemd-container mmdebstrap)"
    return None


def image() -> Path:
    """The cached root filesystem, built on first use (about a minute)."""
    result = subprocess.run(
        [str(REPO / "tools" / "debian-image")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise MachineError(f"tools/debian-image failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _cgroup_dirs(name: str) -> list[Path]:
    """Where the container's own cgroups go: the unified and the named systemd
    hierarchies on a hybrid host, the one tree on a cgroup v2 host."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base / name]
    return [base / h / name for h in ("unified", "systemd") if (base / h).is_dir()]


def _die_with_parent(parent: int) -> None:
    if _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


class DebianMachine:
    def __init__(self, lower: Path, workspace: Path) -> None:
        self.id = secrets.token_hex(4)
        self.lower = lower
        self.workspace = workspace
        self.root = workspace / "root"
        self.cgroups = _cgroup_dirs(f"kbtest-{self.id}")
        self.boot_proc: subprocess.Popen[bytes] | None = None
        self.boot_log = workspace / "boot.log"
        self.mounted = False

    # -- life cycle ------------------------------------------------------------

    def start(self) -> None:
        for name in ("upper", "work", "root"):
            (self.workspace / name).mkdir()
        options = (
            f"lowerdir={self.lower},upperdir={self.workspace / 'upper'},"
            f"workdir={self.workspace / 'work'}"
        )
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)], check=True
        )
        self.mounted = True
        self._boot()

    def _boot(self) -> None:
        with self.boot_log.open("ab") as log:
            self.boot_proc = subprocess.Popen(
                [str(BOOT), str(self.root), self.id, *map(str, self.cgroups)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),  # noqa: PLW1509
            )
        self.wait_booted()

    def leader(self) -> int | None:
        """The container's PID 1, as the host sees it (None while it boots)."""
        for cgroup in self.cgroups:
            procs = cgroup / "payload" / "init.scope" / "cgroup.procs"
            try:
                pids = [int(p) for p in procs.read_text().split()]
            except OSError:
                continue
            for pid in pids:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                nspid = next((ln for ln in status.splitlines() if ln.startswith("NSpid:")), "")
                if nspid.split()[-1:] == ["1"]:
                    return pid
        return None

    def wait_booted(self, timeout: float = BOOT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.boot_proc is not None and self.boot_proc.poll() is not None:
                raise MachineError(f"the container stopped while booting:\n{self._log_tail()}")
            pid = self.leader()
            if pid is not None and Path(f"/proc/{pid}/root/run/systemd/private").exists():
                state = self.run(
                    "systemctl", "is-system-running", "--wait", check=False, timeout=timeout
                ).stdout.strip()
                if state in ("running", "degraded"):
                    return
                raise MachineError(f"the container booted {state!r}:\n{self._log_tail()}")
            time.sleep(0.05)  # polling the kernel's view: there is nothing to wait on
        raise MachineError(f"the container did not boot in {timeout:g} s:\n{self._log_tail()}")

    def reboot(self) -> None:
        old = self.leader()
        self.run("systemctl", "reboot", check=False)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while self.leader() in (old, None):
            if time.monotonic() > deadline:
                raise MachineError(
                    f"the container did not come back after a reboot:\n{self._log_tail()}"
                )
            time.sleep(0.05)
        self.wait_booted()

    def close(self) -> None:
        pid = self.leader()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGRTMIN + 4)  # systemd's "power off"
        if self.boot_proc is not None:
            try:
                self.boot_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.boot_proc.pid, signal.SIGKILL)
                self.boot_proc.wait()
        for cgroup in self.cgroups:
            # Deepest first: a cgroup directory goes only once it is empty.
            if cgroup.exists():
                for sub in sorted(cgroup.rglob("*"), key=lambda p: -len(p.parts)):
                    if sub.is_dir():
                        with contextlib.suppress(OSError):
                            sub.rmdir()
                with contextlib.suppress(OSError):
                    cgroup.rmdir()
        if self.mounted:
            subprocess.run(["umount", str(self.root)], check=False)
            self.mounted = False

    def _log_tail(self) -> str:
        try:
            return self.boot_log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    # -- inside ----------------------------------------------------------------

    def run(
        self,
        *argv: str,
        user: str | None = None,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside, as root or as ``user`` (with that user's groups)."""
        pid = self.leader()
        if pid is None:
            raise MachineError("the container is not running")
        command: Sequence[str] = argv
        if user is not None:
            command = ["runuser", "-u", user, "--", *argv]
        result = subprocess.run(
            ["nsenter", "-t", str(pid), "-a", "--", "/usr/bin/env", "-i", f"PATH={PATH}",
             "LANG=C.UTF-8", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise MachineError(
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """A root-owned file inside (through the overlay, as the admin's editor would)."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def copy_in(self, source: Path, path: str) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
