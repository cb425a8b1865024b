"""Runs the ``on_failure`` command inside the event loop, never waiting for it.

Each run goes through :class:`~.spawner.Spawner` (own process group, stdin
/dev/null, dies with the supervisor, exec errors in words) with the explicit
environment :func:`.events.hook_environment` builds. Its exit comes back
through a pidfd, its output (stdout and stderr) goes to the supervisor log as
``on_failure: NAME: LINE`` (at most ``MAX_LINES`` lines per run), and a run
still going after its timeout is killed with its whole process group. When it
exits, whatever it left in its group is killed too: a hook cannot leave
daemons behind. At most ``MAX_RUNNING`` run at once; a failure that comes
while they all run is logged and gets no hook (a queue would only grow while
something fails in a loop).
"""

from __future__ import annotations

import contextlib
import os
import signal

from ..backends.native.spawner import Spawner, SpawnError, read_report
from ..core import describe_exit
from ..runtime.loop import read_pipe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from ..runtime.log import Log
    from ..runtime.loop import Loop, Timer

MAX_RUNNING = 4
MAX_LINES = 50
MAX_LINE_CHARS = 500
SOURCE = "on_failure"


class _Run:
    __slots__ = ("label", "lines", "output_fd", "partial", "pid", "pidfd", "report_fd", "timer")

    def __init__(self, label: str, pid: int, pidfd: int, output_fd: int, report_fd: int) -> None:
        self.label = label
        self.pid = pid
        self.pidfd = pidfd
        self.output_fd = output_fd
        self.report_fd = report_fd
        self.partial = b""
        self.lines = 0
        self.timer: Timer | None = None


class HookRunner:
    def __init__(self, loop: Loop, log: Log) -> None:
        self.loop = loop
        self._log = log
        self._spawner: Spawner | None = None
        self._runs: dict[int, _Run] = {}

    @property
    def running(self) -> int:
        return len(self._runs)

    def pids(self) -> set[int]:
        return set(self._runs)

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        label: str,
        timeout: float,
    ) -> None:
        """Start one run for ``label`` (the process that failed), or log why not."""
        if len(self._runs) >= MAX_RUNNING:
            self._log.warning(SOURCE, f"{label}: not run, {MAX_RUNNING} runs are still going")
            return
        if self._spawner is None:
            self._spawner = Spawner()
        try:
            child = self._spawner.spawn(argv, cwd=str(cwd), env=env)
        except SpawnError as e:
            self._log.warning(SOURCE, f"{label}: could not run {argv[0]!r}: {e}")
            return
        run = _Run(label, child.pid, os.pidfd_open(child.pid), child.output_fd, child.report_fd)
        self._runs[run.pid] = run
        self.loop.add_reader(run.pidfd, lambda: self._on_exit(run))
        self.loop.add_reader(run.output_fd, lambda: self._on_output(run))
        run.timer = self.loop.call_later(timeout, lambda: self._on_timeout(run, timeout))

    def _on_output(self, run: _Run) -> None:
        data = read_pipe(run.output_fd)
        if data is None:
            return
        if not data:
            self._close_output(run)
            return
        self._take(run, data)

    def _take(self, run: _Run, data: bytes) -> None:
        *lines, run.partial = (run.partial + data).split(b"\n")
        if len(run.partial) > MAX_LINE_CHARS * 4:  # a line without end: cut it
            lines.append(run.partial)
            run.partial = b""
        for line in lines:
            run.lines += 1
            if run.lines <= MAX_LINES:
                text = line.decode("utf-8", "replace").rstrip("\r")[:MAX_LINE_CHARS]
                self._log.info(SOURCE, f"{run.label}: {text}")

    def _close_output(self, run: _Run) -> None:
        if run.output_fd < 0:
            return
        self.loop.remove_reader(run.output_fd)
        os.close(run.output_fd)
        run.output_fd = -1
        if run.partial:
            self._take(run, b"\n")

    def _on_timeout(self, run: _Run, timeout: float) -> None:
        run.timer = None
        self._log.warning(SOURCE, f"{run.label}: still running after {timeout:g} s; killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pid, signal.SIGKILL)

    def _on_exit(self, run: _Run) -> None:
        # Whatever the run left in its process group goes with it; killed before the
        # reap, while the zombie leader still holds the group's ID.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pid, signal.SIGKILL)
        try:
            pid, status = os.waitpid(run.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = run.pid, 0
        if pid == 0:
            return
        self._finish(run, status)

    def _finish(self, run: _Run, status: int) -> None:
        self._runs.pop(run.pid, None)
        self.loop.remove_reader(run.pidfd)
        os.close(run.pidfd)
        if run.timer is not None:
            run.timer.cancel()
        if run.output_fd >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                while data := os.read(run.output_fd, 65536):
                    self._take(run, data)
            self._close_output(run)
        if run.lines > MAX_LINES:
            self._log.info(
                SOURCE, f"{run.label}: {run.lines - MAX_LINES} more output lines dropped"
            )
        report = read_report(run.report_fd)
        os.close(run.report_fd)
        if report:
            self._log.warning(SOURCE, f"{run.label}: {report.decode('utf-8', 'replace')}")
            return
        if os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0:
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            self._log.warning(SOURCE, f"{run.label}: {describe_exit(code, sig)}")

    def close(self) -> None:
        """Kill and reap every run (the supervisor is stopping)."""
        for run in list(self._runs.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.pid, signal.SIGKILL)
            _pid, status = os.waitpid(run.pid, 0)
            self._finish(run, status)
        if self._spawner is not None:
            self._spawner.close()
            self._spawner = None
