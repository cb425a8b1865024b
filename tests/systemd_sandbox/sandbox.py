"""A real systemd 252 system manager in a PID + mount + UTS namespace, for tests.

The steps are those of the shared recipe (docs: "Testing against a real systemd
on a machine where PID 1 is not systemd"): an instance dir on the host with the
masked units, ``unshare`` running ``nsinit.sh`` as the namespace's PID 1, which
moves itself into ``kissbot-ID`` cgroups, mounts private tmpfs on /run, /tmp and
/var/tmp, binds the system bus, journal and unit dirs back to the instance dir,
and execs systemd. Readiness is systemd's own ``READY=1`` on a datagram socket.
Beyond the recipe, nsinit.sh also gives systemd a private /sys/fs/cgroup tmpfs
and an overlay /dev: without them a boot leaves changes on the host (see there).

From the host:

* the system bus is ``unix:path=INST/dbus/system_bus_socket`` (:attr:`bus_address`);
* the journal files are in ``INST/log/journal`` (:attr:`journal_dir`);
* unit files a test installs go in ``INST/etc-systemd-system`` (:attr:`units_dir`),
  followed by :meth:`daemon_reload`;
* commands that need the manager's private socket (``systemctl``, ``systemd-run``,
  ``journalctl``, ``systemd-analyze``) run inside with :meth:`run`.

Nothing of a sandbox outlives :meth:`SystemdSandbox.stop`; if the test process is
killed, ``PR_SET_PDEATHSIG`` and ``unshare --kill-child`` take the namespace down
with it and :meth:`SystemdSandbox.cleanup_leftovers` removes its empty cgroups and
its instance dir at the start of the next session.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "MASKED_UNITS",
    "SandboxBootError",
    "SandboxCommandError",
    "SandboxError",
    "SandboxUnavailable",
    "SystemdSandbox",
    "cgroup_hierarchies",
    "unavailable_reason",
]

SYSTEMD = Path("/lib/systemd/systemd")
NSINIT = Path(__file__).with_name("nsinit.sh")
PROC_MOUNTS = Path("/proc/self/mounts")

#: Without these masks the nested systemd changes the HOST: systemd-tmpfiles-setup
#: empties the host's /tmp, others write /var/log/wtmp, apply sysctls, load
#: kernel modules, start timers. The list is the recipe's, unchanged.
MASKED_UNITS: tuple[str, ...] = (
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "kmod-static-nodes.service",
    "modprobe@.service",
    "proc-sys-fs-binfmt_misc.automount",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "systemd-ask-password-console.path",
    "systemd-binfmt.service",
    "systemd-firstboot.service",
    "systemd-journal-flush.service",
    "systemd-journald-audit.socket",
    "systemd-machine-id-commit.service",
    "systemd-modules-load.service",
    "systemd-pcrphase-sysinit.service",
    "systemd-pcrphase.service",
    "systemd-random-seed.service",
    "systemd-remount-fs.service",
    "systemd-repart.service",
    "systemd-sysctl.service",
    "systemd-sysusers.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-tmpfiles-clean.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-setup.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-initctl.socket",
    "systemd-timesyncd.service",
    "systemd-pstore.service",
)

JOURNALD_CONF = "[Journal]\nStorage=volatile\nReadKMsg=no\nRateLimitBurst=0\n"
SYSTEM_CONF = "[Manager]\nDefaultTimeoutStopSec=3s\n"

# Instance ids are OWNERPID-HEX: cleanup_leftovers() leaves the cgroups of a
# live owner alone (another pytest session may be booting one right now).
_CGROUP_NAME = re.compile(r"^kissbot-(?P<owner>\d+)-[0-9a-f]{6}$")
_INSTANCE_NAME = re.compile(r"^kissbot-sd-(?P<owner>\d+)-[0-9a-f]{6}-")

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)

# Commands run inside get this environment (plus the caller's additions), not
# the test process's: no pager, no colours, no stray NOTIFY_SOCKET or D-Bus address.
_BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}


class SandboxError(RuntimeError):
    """A systemd sandbox could not be started, used or stopped."""


class SandboxUnavailable(SandboxError):
    """This machine cannot boot a sandbox at all (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxBootError(SandboxError):
    """systemd was started but did not become ready; the message has the logs.

    ``instance_dir`` is where it was (removed by the time this is raised);
    ``console`` and ``journal`` are the tails of its output.
    """

    def __init__(
        self, what: str, *, sandbox_id: str, instance_dir: Path, console: str, journal: str
    ):
        super().__init__(
            f"systemd sandbox {sandbox_id} did not boot: {what}\n"
            f"--- console ({instance_dir / 'console.log'}):\n{console}\n"
            f"--- journal:\n{journal}"
        )
        self.what = what
        self.instance_dir = instance_dir
        self.console = console
        self.journal = journal


class SandboxCommandError(subprocess.CalledProcessError):
    """A command run inside the sandbox failed; the message includes its output."""

    def __str__(self) -> str:
        text = super().__str__()
        for name, data in (("stdout", self.stdout), ("stderr", self.stderr)):
            if data:
                text += f"\n{name}:\n{str(data).rstrip()}"
        return text


def cgroup_hierarchies(mounts: Path = PROC_MOUNTS) -> list[Path]:
    """The mount points of every cgroup (v1) and cgroup2 hierarchy."""
    found: list[Path] = []
    for line in mounts.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] in ("cgroup", "cgroup2"):
            found.append(Path(fields[1]))
    return found


def unavailable_reason(systemd: Path = SYSTEMD) -> str | None:
    """Why this machine cannot boot a sandbox, or None if it should be able to."""
    if os.geteuid() != 0:
        return "not root (namespaces and cgroups need root)"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"no `{tool}` on PATH (util-linux)"
    if not os.access(systemd, os.X_OK):
        return f"no {systemd}"
    if not cgroup_hierarchies():
        return "no cgroup hierarchy mounted"
    return None


def _die_with_parent(parent: int) -> None:
    """preexec_fn: SIGKILL the child when the spawning thread exits."""
    if _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # the parent died before prctl: nobody will kill us
        os.kill(os.getpid(), signal.SIGKILL)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({path}: {exc.strerror})"


def _rmdir_tree(top: Path, *, timeout: float = 0.0) -> list[Path]:
    """rmdir a cgroup dir and its children deepest first; returns what is left.

    A cgroup whose processes have just died can report EBUSY for a moment, so
    failures are retried until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        left: list[Path] = []
        if not top.is_dir():
            return left
        for dirpath, _dirnames, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(Path(dirpath))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def _cgroup_has_processes(top: Path) -> bool:
    for dirpath, _dirnames, _files in os.walk(top):
        with contextlib.suppress(OSError):
            if (Path(dirpath) / "cgroup.procs").read_text().strip():
                return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SystemdSandbox:
    """One namespaced systemd system manager: ``start()``, use, ``stop()``.

    Also a context manager (``with SystemdSandbox() as sd: ...`` starts and stops).
    ``start()`` must be called from the main thread: the parent-death signal that
    kills the namespace if the test process dies fires when the spawning thread exits.
    """

    def __init__(
        self,
        *,
        systemd: Path = SYSTEMD,
        boot_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        tmp_root: Path = Path("/tmp"),
    ) -> None:
        self._systemd = systemd
        self._boot_timeout = boot_timeout
        self._stop_timeout = stop_timeout
        self._tmp_root = tmp_root
        self.id = f"{os.getpid()}-{secrets.token_hex(3)}"
        self._inst: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid1: int | None = None
        self.boot_seconds: float | None = None
        """Seconds from spawning unshare to READY=1."""
        self.stop_seconds: float | None = None
        """Seconds :meth:`stop` took, cgroup and file clean-up included."""

    # ----------------------------------------------------------------- paths

    @property
    def instance_dir(self) -> Path:
        """The instance dir on the host (exists between start() and stop())."""
        if self._inst is None:
            raise SandboxError("sandbox not started")
        return self._inst

    @property
    def pid1(self) -> int:
        """Host PID of the namespace's PID 1 (systemd)."""
        if self._pid1 is None:
            raise SandboxError("sandbox not started")
        return self._pid1

    @property
    def bus_address(self) -> str:
        """D-Bus address of the sandbox's system bus, usable from the host."""
        return f"unix:path={self.instance_dir / 'dbus' / 'system_bus_socket'}"

    @property
    def journal_dir(self) -> Path:
        """Directory of the sandbox's (volatile) journal files, readable from the host."""
        return self.instance_dir / "log" / "journal"

    @property
    def units_dir(self) -> Path:
        """Host dir bound on /etc/systemd/system inside: install unit files here."""
        return self.instance_dir / "etc-systemd-system"

    @property
    def running(self) -> bool:
        """Whether the namespace (its ``unshare`` process) is still up."""
        return self._proc is not None and self._proc.poll() is None

    @functools.cached_property
    def version(self) -> str:
        """The manager's version line, e.g. ``systemd 252 (252.39-1~deb12u2)``."""
        return self.systemctl("--version").stdout.splitlines()[0]

    def cgroup_dirs(self) -> list[Path]:
        """This instance's ``kissbot-ID`` cgroup dirs that exist, in every hierarchy."""
        return [
            h / f"kissbot-{self.id}"
            for h in cgroup_hierarchies()
            if (h / f"kissbot-{self.id}").exists()
        ]

    def namespace_pids(self) -> list[int]:
        """Host PIDs of every process in the sandbox's PID namespace (PID 1 included)."""
        try:
            target = os.readlink(f"/proc/{self.pid1}/ns/pid")
        except OSError:
            return []
        pids: list[int] = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/ns/pid") == target:
                        pids.append(int(entry))
        return pids

    # ------------------------------------------------------------- lifecycle

    def start(self, binds: Sequence[Path] = ()) -> None:
        """Boot systemd; return when it has sent READY=1.

        ``binds``: host paths to re-bind at the same path inside after the tmpfs
        mounts on /tmp and /var/tmp (which would hide them otherwise). The
        instance dir itself is always re-bound (the notify socket lives there).
        Raises :class:`SandboxUnavailable` if the machine cannot boot one at all,
        :class:`SandboxBootError` (with the console and journal tails) if systemd
        does not become ready within ``boot_timeout``.
        """
        if self._proc is not None:
            raise SandboxError("sandbox already started")
        reason = unavailable_reason(self._systemd)
        if reason is not None:
            raise SandboxUnavailable(reason)
        if threading.current_thread() is not threading.main_thread():
            raise SandboxError(
                "start() must run in the main thread: PR_SET_PDEATHSIG fires when the "
                "spawning thread exits, which would kill the sandbox early"
            )
        bind_paths = [Path(p).absolute() for p in binds]
        for p in bind_paths:
            if not p.exists():
                raise SandboxError(f"bind path {p} does not exist on the host")

        inst = Path(tempfile.mkdtemp(prefix=f"kissbot-sd-{self.id}-", dir=self._tmp_root))
        self._inst = inst
        try:
            self._prepare(inst)
            self._boot(inst, bind_paths)
        except BaseException:
            self.stop()
            raise

    def _prepare(self, inst: Path) -> None:
        for sub in ("dbus", "log", "etc-systemd-system"):
            (inst / sub).mkdir()
        for unit in MASKED_UNITS:
            (inst / "etc-systemd-system" / unit).symlink_to("/dev/null")
        (inst / "journald.conf").write_text(JOURNALD_CONF)
        (inst / "system.conf").write_text(SYSTEM_CONF)
        # git keeps the executable bit, but an unpacked archive may not.
        NSINIT.chmod(NSINIT.stat().st_mode | 0o111)

    def _boot(self, inst: Path, binds: Sequence[Path]) -> None:
        notify_path = inst / "notify"
        argv = [
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--uts",
            "--mount-proc",
            "--propagation",
            "private",
            "--kill-child=SIGKILL",
            "--",
            str(NSINIT),
            str(inst),
            self.id,
            str(inst),
            *map(str, binds),
        ]
        env = {
            "PATH": _BASE_ENV["PATH"],
            "NOTIFY_SOCKET": str(notify_path),
            "KISSBOT_SANDBOX_SYSTEMD": str(self._systemd),
        }
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            notify.settimeout(0.05)
            started = time.monotonic()
            with open(inst / "console.log", "wb") as console:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    # The recipe's kill switch; start() checked it runs in the main
                    # thread, and the function only calls prctl/getppid/kill.
                    preexec_fn=functools.partial(_die_with_parent, os.getpid()),  # noqa: PLW1509
                )
            self._wait_ready(notify, started)
        notify_path.unlink()
        self.boot_seconds = time.monotonic() - started
        self._pid1 = self._find_pid1()

    def _wait_ready(self, notify: socket.socket, started: float) -> None:
        assert self._proc is not None
        deadline = started + self._boot_timeout
        while time.monotonic() < deadline:
            try:
                data = notify.recv(4096)
            except TimeoutError:
                if self._proc.poll() is not None:
                    raise self._boot_error(
                        f"unshare exited with status {self._proc.returncode} before READY=1"
                    ) from None
                continue
            if b"READY=1" in data.split(b"\n"):
                return
        raise self._boot_error(f"no READY=1 within {self._boot_timeout} s")

    def _find_pid1(self) -> int:
        assert self._proc is not None
        pid = self._proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if len(children) != 1:
            raise self._boot_error(f"unshare ({pid}) has children {children}, expected one")
        return int(children[0])

    def _boot_error(self, what: str) -> SandboxBootError:
        inst = self.instance_dir
        journal = "(no journal)"
        if self.journal_dir.is_dir():
            out = subprocess.run(
                ["journalctl", "-D", str(self.journal_dir), "-n", "30", "--no-pager"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=dict(_BASE_ENV),
                check=False,
                timeout=10,
            )
            journal = (out.stdout + out.stderr).rstrip()
        return SandboxBootError(
            what,
            sandbox_id=self.id,
            instance_dir=inst,
            console=_tail(inst / "console.log"),
            journal=journal,
        )

    def stop(self) -> None:
        """Power the sandbox off and remove every trace of it. Idempotent.

        SIGRTMIN+4 (clean poweroff), SIGKILL of PID 1 after ``stop_timeout``
        (the kernel then kills every process of the namespace), reap unshare,
        rmdir the ``kissbot-ID`` cgroup dirs deepest first, remove the instance dir.
        """
        begun = time.monotonic()
        problems: list[str] = []
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                self._power_off(proc)
            for top in (h / f"kissbot-{self.id}" for h in cgroup_hierarchies()):
                left = _rmdir_tree(top, timeout=2.0)
                if left:
                    problems.append(f"cgroup dirs not removed: {left}")
        finally:
            if self._inst is not None:
                shutil.rmtree(self._inst, ignore_errors=True)
                self._inst = None
            self._pid1 = None
            self.__dict__.pop("version", None)
        self.stop_seconds = time.monotonic() - begun
        if problems:
            raise SandboxError(f"sandbox {self.id}: " + "; ".join(problems))

    def _power_off(self, proc: subprocess.Popen[bytes]) -> None:
        pid1 = self._pid1
        if proc.poll() is None and pid1 is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid1, signal.SIGRTMIN + 4)
            try:
                proc.wait(timeout=self._stop_timeout)
                return
            except subprocess.TimeoutExpired:
                pass
        # Killing PID 1 makes the kernel kill the whole namespace; killing
        # unshare (PID 1 not known yet: a failed boot) does the same through
        # --kill-child.
        if proc.poll() is None:
            if pid1 is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid1, signal.SIGKILL)
            else:
                proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> SystemdSandbox:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @staticmethod
    def cleanup_leftovers(
        is_alive: Callable[[int], bool] = _pid_alive, tmp_root: Path = Path("/tmp")
    ) -> list[Path]:
        """Remove what runs that were killed left: empty ``kissbot-ID`` cgroup
        trees and ``kissbot-sd-ID-*`` instance dirs.

        Anything whose owner (the PID in its id) still lives is left alone (it
        may be another session's live sandbox), and so is a cgroup tree with
        any process in it. Returns the top dirs removed.
        """
        removed: list[Path] = []
        for hierarchy in cgroup_hierarchies():
            for top in sorted(hierarchy.glob("kissbot-*")):
                match = _CGROUP_NAME.match(top.name)
                if match is None or not top.is_dir() or is_alive(int(match["owner"])):
                    continue
                if _cgroup_has_processes(top):
                    continue
                if not _rmdir_tree(top):
                    removed.append(top)
        for inst in sorted(tmp_root.glob("kissbot-sd-*")):
            match = _INSTANCE_NAME.match(inst.name)
            if match is None or not inst.is_dir() or is_alive(int(match["owner"])):
                continue
            # Its namespace died with its owner (PR_SET_PDEATHSIG): nothing is
            # mounted below it, so removing it cannot reach into anything else.
            shutil.rmtree(inst, ignore_errors=True)
            removed.append(inst)
        return removed

    # -------------------------------------------------------------- commands

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command INSIDE the sandbox (``nsenter -t PID1 -m -p -u``).

        The command sees the sandbox's /run, its system bus at the normal path,
        and ``systemctl``/``journalctl`` talk to its manager. The environment is
        a fixed minimal one plus ``env``; ``cwd`` defaults to ``/``. Output is
        captured as text. With ``check``, a non-zero exit raises
        :class:`SandboxCommandError` (whose message includes stdout and stderr).
        """
        wd = [f"--wd={cwd}"] if cwd is not None else []
        full = ["nsenter", "-t", str(self.pid1), "-m", "-p", "-u", *wd, "--", *argv]
        result = subprocess.run(
            full,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={**_BASE_ENV, **(env or {})},
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise SandboxCommandError(result.returncode, list(argv), result.stdout, result.stderr)
        return result

    def systemctl(
        self, *args: str, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """``systemctl ARGS`` inside the sandbox."""
        return self.run("systemctl", *args, check=check, timeout=timeout)

    def daemon_reload(self) -> None:
        """Make the manager re-read :attr:`units_dir` after installing unit files."""
        self.systemctl("daemon-reload")

    def journal(self, unit: str) -> str:
        """The unit's journal messages (``journalctl -u UNIT -o cat`` inside).

        journald writes asynchronously: a line logged a moment ago may not be
        there yet, so poll for what you expect.
        """
        return self.run("journalctl", "-u", unit, "--no-pager", "-o", "cat").stdout
