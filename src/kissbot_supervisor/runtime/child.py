"""Short-lived children that run one of our own modules, so that the resident
daemon never loads what they need (PyYAML for the config, cryptography to
decrypt a token): a module, once imported, stays for the daemon's whole life.

The child is ``python -I -c BOOTSTRAP PACKAGE_ROOT MODULE``: isolated (-I), so
neither the current directory (the KissBot checkout, which the bots' user can
write: a ``yaml.py`` or ``cryptography.py`` dropped there would run as the
supervisor's user) nor ``PYTHON*`` variables nor the user's site-packages reach
its imports; an empty environment, as it needs none. BOOTSTRAP puts the
directory our own package was loaded from first on ``sys.path`` unless it is
there already, so the child runs the very code the daemon runs (a development
checkout as much as site-packages), then calls ``MODULE.main()``. Input goes
on stdin and the answer comes on stdout: never a secret in argv or environment.

``os.posix_spawn`` and two pipes rather than ``subprocess``, which would itself
cost the daemon 0.6 MiB. :func:`run_module` waits for the child (a few tens of
milliseconds, at start-up and on reload); :func:`run_module_on_loop` runs one
on the event loop, for what happens while the fleet runs (a token changed in the DB):
what the child reads is the checkout's, and a FIFO swapped in for a file it
opens by name would otherwise stop the daemon until the deadline.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .loop import Loop, Timer

BOOTSTRAP = (
    "import sys, importlib\n"
    "root = sys.argv[1]\n"
    "if root not in sys.path:\n"
    "    sys.path.insert(0, root)\n"
    "importlib.import_module(sys.argv[2]).main()\n"
)
# Where kissbot_supervisor was loaded from: site-packages, or a checkout's src/.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


# A child takes tens of milliseconds; a loaded host's first start of Python, a
# second or two. Beyond this it is stuck: a FIFO put in place of ``kissbot.db``
# after our check, which SQLite opens by name, blocks it. Killed, it is an error.
TIMEOUT_SEC = 20.0
MAX_ANSWER = 1 << 20  # a config's parse, a fleet's token states: far below this


class ChildError(Exception):
    """The child could not be run."""


def run_module(module: str, data: bytes, timeout: float = TIMEOUT_SEC) -> tuple[bytes, int | None]:
    """Run ``module``'s ``main()`` in an isolated child with ``data`` on its stdin;
    what it wrote on stdout, and its exit status (negative: the signal that ended it;
    None: not known). ChildError when it could not run, gave no answer within
    ``timeout`` or answered more than ``MAX_ANSWER`` bytes (it is then killed)."""
    from .loop import Loop

    # The same reading as on the daemon's loop, on a loop of its own that runs only
    # until the child is done: one home for the deadline, the cap and the reap.
    loop = Loop()
    outcome: list[tuple[bytes, int | None, str | None]] = []
    try:
        run_module_on_loop(loop, module, data, lambda *done: outcome.append(done), timeout)
        while not outcome:
            loop.run_once()
    finally:
        loop.close()
    answer, status, problem = outcome[0]
    if problem is not None:
        raise ChildError(problem)
    return answer, status


def _spawn(module: str, data: bytes) -> tuple[int, int]:
    """The child running ``module`` with ``data`` written to its stdin: (PID, the
    read end of its stdout)."""
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    argv = [sys.executable, "-I", "-c", BOOTSTRAP, PACKAGE_ROOT, module]
    try:
        pid = os.posix_spawn(
            sys.executable,
            argv,
            {},
            file_actions=[(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1)],
        )
    except OSError as e:
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)
        raise ChildError(f"cannot run {sys.executable}: {e.strerror}") from None
    os.close(in_r)
    os.close(out_w)
    try:
        # The input is small (a config, one request); writing it all before reading
        # cannot fill both pipes.
        with os.fdopen(in_w, "wb") as to_child:
            to_child.write(data)
    except BrokenPipeError:
        pass  # it ended without reading: its status tells why
    return pid, out_r


class LoopChild:
    """A child's output read on the event loop to its end, and its exit, without
    ever waiting: ``done(output, status, problem)`` is called once, from the loop.

    ``status`` is the exit status (negative: the signal), or None when it is not
    known; ``problem`` is None, or why the run was cut short: no end within
    ``timeout`` (the child is killed; ``output`` is what came), or more than
    ``max_output`` bytes (killed, ``output`` empty), unless ``keep_tail``: then
    only the last ``max_output`` bytes are kept, from a line's start. ``group``:
    the child leads its own process group, killed at the end with whatever it
    started. While it runs, :attr:`pid` is a child the supervisor started (the
    reaper must leave it alone). :meth:`cancel` ends it without calling ``done``.
    """

    def __init__(
        self,
        loop: Loop,
        pid: int,
        output_fd: int,
        done: Callable[[bytes, int | None, str | None], None],
        *,
        timeout: float,
        max_output: int,
        keep_tail: bool = False,
        group: bool = False,
    ) -> None:
        self._loop = loop
        self._out = output_fd
        self._done: Callable[[bytes, int | None, str | None], None] | None = done
        self._max = max_output
        self._keep_tail = keep_tail
        self._group = group
        self._output = b""
        self._status: int | None = None
        self.pid: int | None = pid
        os.set_blocking(output_fd, False)
        loop.add_reader(output_fd, self._on_output)
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:  # gone and reaped already: its output's end is its end
            self._pidfd = -1
        else:
            loop.add_reader(self._pidfd, self._on_exit)
        self._timer: Timer | None = loop.call_later(
            timeout, lambda: self._cut(f"gave no answer within {timeout:g} s")
        )

    def _on_output(self) -> None:
        from .loop import read_pipe

        chunk = read_pipe(self._out)
        if chunk is None:
            return
        if not chunk:
            self._close_output()
            self._maybe_done()
            return
        self._output += chunk
        if len(self._output) <= self._max:
            return
        if self._keep_tail:
            start = self._output.find(b"\n", len(self._output) - self._max)
            self._output = self._output[start + 1 :] if start >= 0 else b""
            return
        self._output = b""
        self._cut(f"answered more than {self._max} bytes")

    def _on_exit(self) -> None:
        if self._reap(os.WNOHANG):
            if self._out >= 0:
                # It has ended: the rest of its output is in the pipe, or will never be
                # written (a process it started holding the pipe must not keep us).
                self._on_output()
                if self._out >= 0:
                    self._close_output()
            self._maybe_done()

    def _reap(self, options: int) -> bool:
        """Reap the child (killing its group first); whether it is reaped."""
        import signal

        if self.pid is None:
            return True
        if self._group:
            # Before the reap, while the leader (a zombie now) still holds the group's ID.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        try:
            pid, status = os.waitpid(self.pid, options)
        except ChildProcessError:
            pid, status = self.pid, -1  # reaped elsewhere: its status is lost
        if pid == 0:
            return False
        self._status = None if status == -1 else os.waitstatus_to_exitcode(status)
        self.pid = None
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        return True

    def _close_output(self) -> None:
        self._loop.remove_reader(self._out)
        os.close(self._out)
        self._out = -1

    def _maybe_done(self) -> None:
        if self._out < 0 and self.pid is None:
            self._end(None)

    def _cut(self, problem: str) -> None:
        self._timer = None
        self._kill()
        self._end(problem)

    def _kill(self) -> None:
        import signal

        if self.pid is not None:
            kill = os.killpg if self._group else os.kill
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(self.pid, signal.SIGKILL)
            self._reap(0)  # killed: at once
        if self._out >= 0:
            self._close_output()

    def _end(self, problem: str | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        done, self._done = self._done, None
        if done is not None:
            done(self._output, self._status, problem)

    def cancel(self) -> None:
        """Kill and reap the child, and never call ``done``."""
        self._done = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._kill()


def run_module_on_loop(
    loop: Loop,
    module: str,
    data: bytes,
    done: Callable[[bytes, int | None, str | None], None],
    timeout: float | None = None,
) -> LoopChild | None:
    """:func:`run_module` without waiting: ``done`` as :class:`LoopChild`'s, with
    the problem naming ``module``. None when the child could not be started:
    ``done`` is then called on the loop's next turn."""

    def named(answer: bytes, status: int | None, problem: str | None) -> None:
        done(answer, status, None if problem is None else f"{module} {problem}; killed")

    try:
        pid, out_r = _spawn(module, data)
    except ChildError as e:
        problem = str(e)
        loop.call_later(0.0, lambda: done(b"", None, problem))
        return None
    limit = TIMEOUT_SEC if timeout is None else timeout
    return LoopChild(loop, pid, out_r, named, timeout=limit, max_output=MAX_ANSWER)


def describe_exit(what: str, code: int | None) -> str:
    """``what`` ended without an answer, in words."""
    if code is None:
        return f"{what} ended without an answer"
    if code < 0:
        import signal  # resident anyway; lazy to keep this module's imports plain

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"{what} was killed by {name} without an answer"
    return f"{what} exited {code} without an answer"
