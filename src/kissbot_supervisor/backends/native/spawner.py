"""The one place the native backend starts a process.

Own fork/exec rather than ``subprocess.Popen`` because the child needs three
things Popen cannot give together: its own process group, ``PR_SET_PDEATHSIG``
so it dies with the supervisor (old supervisors orphaned their bots), and
``WATCHDOG_PID`` set to its own PID, which only the child knows before exec.

The environment is explicit, stdin is /dev/null, stdout and stderr share one
pipe that the supervisor always drains, and an exec failure comes back to the
parent as words ("python3: No such file or directory"), never as a silent
exit 127.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
from collections.abc import Callable, Mapping, Sequence

from ...core.records import record
from ...runtime.resources import set_oom_score_adjust

PR_SET_PDEATHSIG = 1

# Inherited from the supervisor's own service manager; never meant for the children.
_PRIVATE_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "INVOCATION_ID",
    "CREDENTIALS_DIRECTORY",
    "RUNTIME_DIRECTORY",
    "KISSBOT_CONTROL_SOCKET",
)


class SpawnError(Exception):
    """The process could not be started; the message says why, in words."""


@record
class Child:
    pid: int
    output_fd: int  # read end of the stdout+stderr pipe, non-blocking
    # Non-blocking; EOF without data once exec succeeded, else why it failed (the
    # child then exits 127). Not awaited here: with a hundred bots starting on two
    # cores, waiting for each child to reach exec stalled the loop for a second.
    report_fd: int


def child_environment(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in _PRIVATE_ENV}
    env.update(extra)
    return env


def _prctl() -> Callable[[int, int], int]:
    libc = ctypes.CDLL(None, use_errno=True)  # libc is loaded: no find_library (~1 MiB)
    fn: Callable[[int, int], int] = libc.prctl
    return fn


class Spawner:
    """Starts children; create one per supervisor (it holds /dev/null and libc)."""

    def __init__(self, nofile: tuple[int, int] | None = None) -> None:
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._prctl = _prctl()
        # The supervisor raises its own descriptor limit; children get the one it
        # was given (programs using select() break above 1024).
        self._nofile = nofile or resource.getrlimit(resource.RLIMIT_NOFILE)

    def close(self) -> None:
        os.close(self._devnull)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        pass_fds: Sequence[int] = (),
        watchdog_pid: bool = False,
        oom_score_adjust: int | None = None,
    ) -> Child:
        if not argv:
            raise SpawnError("empty command")
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        env = dict(env)
        parent = os.getpid()
        keep = sorted(set(pass_fds))
        # Signals stay blocked from before the fork until the child has dropped the
        # supervisor's handlers: a SIGTERM sent to a child that has not exec'd yet (a
        # stop right after a start) would otherwise run the supervisor's handler in the
        # child, which writes to the loop's inherited wakeup socket, and the supervisor
        # would take its child's SIGTERM for its own and shut the whole fleet down.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            raise SpawnError(f"fork failed: {e.strerror}") from None
        if pid == 0:  # pragma: no cover - the child; covered by every process test
            self._exec_child(
                argv, cwd, env, keep, out_w, err_w, parent, watchdog_pid, oom_score_adjust
            )
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(out_w)
        os.close(err_w)
        os.set_blocking(out_r, False)
        os.set_blocking(err_r, False)
        return Child(pid=pid, output_fd=out_r, report_fd=err_r)

    def _exec_child(
        self,
        argv: Sequence[str],
        cwd: str,
        env: dict[str, str],
        keep: list[int],
        out_w: int,
        err_w: int,
        parent: int,
        watchdog_pid: bool,
        oom_score_adjust: int | None,
    ) -> None:
        """Runs in the forked child: set up, exec, or report why not and exit 127."""
        stage = "set up"
        try:
            # Still blocked (see spawn): no signal reaches the supervisor's handlers here.
            signal.set_wakeup_fd(-1)
            for sig in signal.valid_signals():
                if callable(signal.getsignal(sig)):
                    signal.signal(sig, signal.SIG_DFL)
            os.setpgid(0, 0)
            self._prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the supervisor died before prctl took effect
                os._exit(0)
            # Python ignores SIGPIPE and the supervisor blocks none; give exec a clean slate.
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            resource.setrlimit(resource.RLIMIT_NOFILE, self._nofile)
            os.dup2(self._devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            for fd in keep:
                os.set_inheritable(fd, True)
            # Only what the child is meant to get: descriptors the supervisor itself
            # inherited without O_CLOEXEC (from a shell, a service manager) stop here.
            low = 3
            for fd in sorted({*keep, err_w}):
                os.closerange(low, fd)
                low = fd + 1
            os.closerange(low, self._nofile[1] if self._nofile[1] > 0 else 1 << 20)
            if oom_score_adjust is not None:
                stage = "set its OOM score adjustment"
                set_oom_score_adjust(oom_score_adjust)
            stage = f"change directory to {cwd}"
            os.chdir(cwd)
            if watchdog_pid:
                env["WATCHDOG_PID"] = str(os.getpid())
            stage = f"execute {argv[0]!r}"
            os.execvpe(argv[0], list(argv), env)
        except OSError as e:
            message = f"cannot {stage}: {e.strerror or errno.errorcode.get(e.errno or 0, e)}"
            _write_all(err_w, message.encode())
        except BaseException as e:
            _write_all(err_w, f"cannot {stage}: {e!r}".encode())
        finally:
            os._exit(127)


def read_report(fd: int) -> bytes | None:
    """What the child reported so far: b"" once it exec'd (EOF), None if not yet known."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return b"".join(chunks) if chunks else None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
