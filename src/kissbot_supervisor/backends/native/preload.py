"""``bot.preload``: bots forked from a fork server that imported their modules once.

The supervisor stays small: the imports live in a separate process, the fork
server (``forkserver.py``, run with the bots' own interpreter, as a bot is).
This module is the supervisor's side: whether a bot's command can be
preloaded at all (:func:`python_program`), the fork server's life
(:class:`ForkServer`), and the policy (:class:`Preloader`): start one when the
first bot is due, hold bots while it imports, fall back to the normal start
in one clear sentence when it cannot serve, replace it when the bot's code
changes on disk.

Trust boundary: the fork server runs the bots' code with the bots'
credentials, so it is treated as a bot. Its messages are size-limited JSON,
checked field by field; a PID it reports is used only once the kernel says it
is the supervisor's own child (the bot is handed to the supervisor, its
subreaper, by a double fork); any misbehaviour (silence past a deadline,
garbage, a PID not ours) ends it and the fleet goes back to normal starts.
It gets nothing a bot does not get: no token (a bot's token is a file whose
path is in its environment), no control socket, no descriptor but the bot's.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from ... import core
from ...core.records import record
from ...runtime.inotify import IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_DONT_FOLLOW, IN_MOVED_TO
from ...runtime.loop import read_pipe
from ...runtime.procinfo import parent_pid
from . import forkserver
from .logfiles import LogFile
from .spawner import Child, Spawner, SpawnError, read_report

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ...runtime.inotify import Events, Subscription
    from ...runtime.log import Log
    from ...runtime.loop import Loop, Timer

START_TIMEOUT_SEC = 60.0  # bots wait this long at most for the imports
REPLY_TIMEOUT_SEC = 5.0  # a fork takes milliseconds; silence this long is a broken server
CODE_SETTLE_SEC = 2.0  # a `git pull` writes many files: one replacement after the last
CODE_MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DONT_FOLLOW
LOG_NAME = "fork-server.log"  # not a channel's: a login has no '-'
FORKSERVER = Path(forkserver.__file__)

_PYTHON = re.compile(r"python[0-9.]*")


@record
class Program:
    """A bot command the fork server can run: ``PYTHON SCRIPT.py ...`` or ``PYTHON -m MOD ...``."""

    interpreter: str
    kind: str  # "script" or "module"
    target: str


def python_program(argv: Sequence[str]) -> Program | str:
    """The Python program ``argv`` runs, or why preload cannot apply to it (a sentence)."""
    if len(argv) < 2 or not _PYTHON.fullmatch(os.path.basename(argv[0])):
        return (
            f"the bot command starts {argv[0] if argv else 'nothing'!r}, not a Python "
            "interpreter (python, python3, python3.11...)"
        )
    if argv[1] == "-m" and len(argv) > 2 and argv[2] and not argv[2].startswith("-"):
        return Program(argv[0], "module", argv[2])
    if argv[1].endswith(".py") and not argv[1].startswith("-"):
        return Program(argv[0], "script", argv[1])
    return (
        f"the bot command runs {argv[0]} {argv[1]!r}: preload needs `PYTHON SCRIPT.py ARGS` "
        "or `PYTHON -m MODULE ARGS`, without interpreter options"
    )


def code_file(name: str | None) -> bool:
    """Whether a changed file name is code (None: events were lost, assume it is)."""
    return name is None or name.endswith((".py", ".so", ".pth"))


@record
class Ready:
    """A fork server's ready report, checked."""

    seconds: float
    imported: int  # modules
    dirs: tuple[str, ...]  # of the imported files, to watch for code changes
    merge: str | None  # bot.memory_merge: None not asked, "" done, else why not


def check_ready(report: object) -> Ready:
    """A fork server's ready report, field by field."""
    if not isinstance(report, dict):
        raise ValueError("a ready report that is not an object")
    seconds, imported, dirs = report.get("seconds"), report.get("imported"), report.get("dirs")
    if not isinstance(seconds, int | float) or not isinstance(imported, list):
        raise ValueError("a ready report without its figures")
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ValueError("a ready report whose directories are not a list of paths")
    merge = report.get("merge")
    if merge is not None and not isinstance(merge, str):
        raise ValueError("a ready report whose memory merge is not a sentence")
    return Ready(
        float(seconds),
        len(imported),
        tuple(dirs[: forkserver.MAX_DIRS]),
        None if merge is None else forkserver.words(merge),
    )


KSM_RUN = Path("/sys/kernel/mm/ksm/run")


def ksm_switched_off(run_file: Path = KSM_RUN) -> bool:
    """Whether the machine's KSM is off (``0``: nothing is merged, whatever asks)."""
    try:
        return run_file.read_text().strip() == "0"
    except OSError:
        return True  # no KSM in this kernel


def watched_dirs(dirs: Sequence[str], workdir: Path) -> list[Path]:
    """The reported directories that are absolute and inside the workdir: the only
    ones watched (the report comes from the bots' side and is not believed)."""
    inside = []
    for d in dirs:
        path = Path(d)
        if path.is_absolute() and ".." not in path.parts and path.is_relative_to(workdir):
            inside.append(path)
    return inside


# Reads of the server's output pipe at its end: a descendant that left its group
# may hold the pipe and write for ever.
DRAIN_READS = 16


class Broken(Exception):
    """The fork server cannot serve any more; the message says why, as a sentence."""


def read_reply(sock: socket.socket, timeout: float, ended: Callable[[], str]) -> int:
    """The PID of the bot a start request made: SpawnError when the fork server says
    it could not, Broken when it says nothing in time, garbage, or a PID that is not
    this process's own child (``ended`` says why, when the socket was closed)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    try:
        if not poller.poll(timeout * 1000):
            raise Broken(f"it did not answer a start within {timeout:g} s")
        data = sock.recv(forkserver.MAX_MESSAGE)
        if not data:
            raise Broken(ended())
        message = forkserver.decode(data)
    except OSError as e:
        raise Broken(f"its socket failed: {e.strerror}") from None
    except (ValueError, RecursionError) as e:  # RecursionError: JSON nested too deep
        raise Broken(f"it sent {e}") from None
    if isinstance(message.get("error"), str):
        raise SpawnError(forkserver.words(message["error"]))
    pid = message.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        raise Broken("it answered a start without a PID")
    # Only our own child (handed over by the double fork) is believed: the server
    # runs the bots' code and could name any process.
    if parent_pid(pid) != os.getpid():
        raise Broken(f"it named PID {pid}, which is not a child of the supervisor")
    return pid


class ForkServer:
    """One fork server process and the supervisor's end of its socket.

    ``state`` goes ``starting`` -> ``ready`` -> ``gone``, or ``starting`` ->
    ``gone``; ``on_change`` is called at each step, with ``why`` set once gone.
    """

    def __init__(
        self,
        loop: Loop,
        spawner: Spawner,
        program: Program,
        modules: Sequence[str],
        merge: bool,
        env: Mapping[str, str],
        workdir: Path,
        output: LogFile,
        oom_score_adjust: int | None,
        on_change: Callable[[ForkServer], None],
    ) -> None:
        self.loop = loop
        self.program = program
        self.workdir = workdir
        self._output = output
        self._on_change = on_change
        self.state = "starting"
        self.why: str | None = None
        self.report: Ready | None = None
        self._timer: Timer | None = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A server that stops reading must not block the loop in a send: the send
        # times out (an OSError, so the server is given up) like an unanswered start.
        ours.settimeout(REPLY_TIMEOUT_SEC)
        try:
            child = spawner.spawn(
                [program.interpreter, str(FORKSERVER), str(theirs.fileno())],
                cwd=str(workdir),
                env=env,
                pass_fds=(theirs.fileno(),),
                oom_score_adjust=oom_score_adjust,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.pid = child.pid
        self.sock = ours
        self._output_fd: int | None = child.output_fd
        self._report_fd = child.report_fd
        try:
            self.pidfd = os.pidfd_open(child.pid)
        except OSError:
            self.pidfd = -1
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)
            self.close()
            raise
        loop.add_reader(self.pidfd, self._on_exit)
        loop.add_reader(child.output_fd, self._on_output)
        loop.add_reader(ours.fileno(), self._on_message)
        self._timer = loop.call_later(START_TIMEOUT_SEC, self._start_timeout)
        setup = {
            "kind": program.kind,
            "target": program.target,
            "modules": list(modules),
            "merge": merge,
        }
        ours.sendall(forkserver.encode({"preload": setup}))

    # -- the start -------------------------------------------------------------

    def _on_message(self) -> None:
        try:
            data = self.sock.recv(forkserver.MAX_MESSAGE)
            message = forkserver.decode(data) if data else None
        except (OSError, ValueError, RecursionError) as e:
            self.give_up(f"it sent {e}")
            return
        if message is None:
            self.give_up(self._exit_words())
        elif self.state == "starting" and "ready" in message:
            try:
                self.report = check_ready(message["ready"])
            except ValueError as e:
                self.give_up(f"it sent {e}")
                return
            self._cancel_timer()
            self.state = "ready"
            self._on_change(self)
        elif self.state == "starting" and isinstance(message.get("failed"), str):
            self.give_up(forkserver.words(message["failed"]))
        else:
            self.give_up("it sent a message nobody asked for")

    def _start_timeout(self) -> None:
        self._timer = None
        self.give_up(f"its imports took longer than {START_TIMEOUT_SEC:.0f} s")

    def _exit_words(self) -> str:
        """Why it ended, once its socket is closed: its exec report or its exit."""
        report = read_report(self._report_fd) if self._report_fd >= 0 else None
        if report:
            return report.decode(errors="replace")
        return "it exited (its own lines are in logs/" + LOG_NAME + ")"

    def _on_exit(self) -> None:
        if self.state != "gone":
            self.give_up(self._exit_words())

    def _on_output(self) -> None:
        assert self._output_fd is not None
        data = read_pipe(self._output_fd)
        if data is None:
            return
        if data:
            self._output.write_chunk(data, _wall())
            return
        self._last_words(self._output_fd)
        self._output_fd = None

    # -- serving -----------------------------------------------------------------

    def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        pass_fds: Sequence[int],
        watchdog_pid: bool,
        oom_score_adjust: int | None,
    ) -> Child:
        """One bot, forked by the server and handed to us; SpawnError: this bot could
        not be started by it (try the normal way); Broken: the server is done for."""
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
        request = {
            "start": {
                "argv": list(argv),
                "env": dict(env),
                "cwd": cwd,
                "watchdog_pid": watchdog_pid,
                "oom_score_adjust": oom_score_adjust,
                "supervisor": os.getpid(),
            }
        }
        try:
            try:
                socket.send_fds(self.sock, [forkserver.encode(request)], [out_w, rep_w, *pass_fds])
            except OSError as e:
                raise Broken(f"its socket failed: {e.strerror}") from None
            finally:
                os.close(out_w)
                os.close(rep_w)
            pid = read_reply(self.sock, REPLY_TIMEOUT_SEC, self._exit_words)
        except BaseException:
            os.close(out_r)
            os.close(rep_r)
            raise
        os.set_blocking(out_r, False)
        os.set_blocking(rep_r, False)
        return Child(pid=pid, output_fd=out_r, report_fd=rep_r)

    # -- the end -----------------------------------------------------------------

    def give_up(self, why: str) -> None:
        if self.state == "gone":
            return
        self.state = "gone"
        self.why = why
        self._cancel_timer()
        self.close()
        self._on_change(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """End it and free everything (its bots are ours: they go on running)."""
        self.state = "gone"
        self._cancel_timer()
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        if self.pidfd >= 0:
            self.loop.remove_reader(self.pidfd)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            os.close(self.pidfd)
            self.pidfd = -1
        if self._report_fd >= 0:
            os.close(self._report_fd)
            self._report_fd = -1
        if self._output_fd is not None:
            self._last_words(self._output_fd)
            self._output_fd = None

    def _last_words(self, fd: int) -> None:
        """What it wrote before its end, up to EOF (or what is there, if a stray
        descendant still holds the pipe), then the pipe is closed."""
        self.loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            # Bounded: a descendant that left its group may still write there forever.
            for _ in range(DRAIN_READS):
                data = os.read(fd, 65536)
                if not data:
                    break
                self._output.write_chunk(data, _wall())
        os.close(fd)
        self._output.flush(_wall())


def _wall() -> float:
    import time

    return time.time()


class Preloader:
    """Whether, and through which fork server, a bot is forked rather than exec'd.

    ``holds(spec)`` is asked before each spawn (True: wait, ``resume`` is called
    when the answer may have changed); ``spawn`` returns None when the bot must
    be started the normal way.
    """

    def __init__(
        self,
        loop: Loop,
        spawner: Spawner,
        modules: Sequence[str],
        merge: bool,
        workdir: Path,
        output: LogFile,
        environment: Callable[[], dict[str, str]],
        log: Log,
        resume: Callable[[], None],
    ) -> None:
        self.loop = loop
        self._spawner = spawner
        self.modules = tuple(modules)
        self.merge = merge
        self._merge_said = False  # bot.memory_merge's outcome, said for the first server
        self.workdir = workdir
        self._output = output
        self._environment = environment
        self._log = log
        self._resume = resume
        self.server: ForkServer | None = None
        self.program: Program | None = None
        self.off_why: str | None = None  # set: preload is off for this run, said once
        self._watches: list[Subscription] = []
        self._code_timer: Timer | None = None
        self._changed: str | None = None  # the first changed file of a burst
        self._oom: int | None = None

    def _applies(self, spec: core.ProcessSpec) -> Program | None:
        if spec.is_hub:
            return None
        found = python_program(spec.argv)
        if isinstance(found, str):
            self._off(found)
            return None
        if found != self.program:
            # The first bot, or a reload changed the command (another interpreter or
            # program): the next starts get a fork server of their own program.
            if self.program is not None:
                self._log.info(
                    "preload",
                    f"the bot command now runs {found.target} with {found.interpreter}: a "
                    "new fork server imports it for the next starts",
                )
                self._replace_server()
            self.program, self._oom = found, spec.oom_score_adjust
        return None if self.off_why is not None else found

    def _replace_server(self) -> None:
        """End the fork server (its bots are ours: they run on) and forget why preload
        was off: the next start that applies starts a new one."""
        self._unwatch()
        if self.server is not None:
            self.server.close()
            self.server = None
        self.off_why = None

    def holds(self, spec: core.ProcessSpec) -> bool:
        if self._applies(spec) is None:
            return False
        if self.server is None:
            self._start()
        return self.server is not None and self.server.state == "starting"

    def spawn(
        self,
        spec: core.ProcessSpec,
        *,
        env: Mapping[str, str],
        pass_fds: Sequence[int],
        known: Collection[int] = (),
    ) -> Child | None:
        """``known``: the PIDs of the children the supervisor already has."""
        server = self.server
        if self._applies(spec) is None or server is None or server.state != "ready":
            return None
        try:
            child = server.spawn(
                spec.argv,
                cwd=str(self.workdir),
                env=env,
                pass_fds=pass_fds,
                watchdog_pid=spec.watchdog_sec > 0 and not spec.liveness,
                oom_score_adjust=spec.oom_score_adjust,
            )
            if child.pid in known or child.pid == server.pid:
                # A child of ours it did not fork for this start (a bot, a hook, the
                # server itself): believing it would credit that process's pings to
                # this bot, and its exit would be taken twice.
                for fd in (child.output_fd, child.report_fd):
                    os.close(fd)
                raise Broken(f"it named PID {child.pid}, a process it did not start for this")
            return child
        except SpawnError as e:
            self._log.warning(
                "preload",
                f"the fork server could not start {spec.name} ({e}); started the normal way",
            )
            return None
        except Broken as e:
            server.give_up(str(e))
            return None

    def _start(self) -> None:
        assert self.program is not None
        try:
            self.server = ForkServer(
                self.loop,
                self._spawner,
                self.program,
                self.modules,
                self.merge,
                self._environment(),
                self.workdir,
                self._output,
                self._oom,
                self._on_server,
            )
        except (OSError, SpawnError) as e:
            self._off(f"the fork server could not be started: {e}")
            return
        self._output.note(
            f"fork server started (PID {self.server.pid}) for {self.program.target}", _wall()
        )

    def _on_server(self, server: ForkServer) -> None:
        if server is not self.server:
            return
        if server.state == "ready" and server.report is not None:
            ready = server.report
            self._log.info(
                "preload",
                f"the fork server (PID {server.pid}) imported {ready.imported} modules of "
                f"{server.program.target} in {ready.seconds:.1f} s: bots are forked from it",
            )
            self._say_merge(ready.merge)
            self._watch([*ready.dirs, *self._program_dirs()])
        elif server.state == "gone":
            self.server = None
            self._off(f"the fork server ended: {server.why}")
            self._watch(self._program_dirs())  # a fix on disk brings it back
        self._resume()

    def _say_merge(self, merge: str | None) -> None:
        """bot.memory_merge's outcome, once: done, not possible here, or waiting for
        the administrator's switch."""
        if not self.merge or self._merge_said:
            return
        self._merge_said = True
        if merge is None:
            merge = "the fork server did not say whether it could"
        if merge:
            self._log.warning(
                "preload",
                f"bot.memory_merge is on but cannot apply: {merge}; bots are forked without it",
            )
        elif ksm_switched_off():
            self._log.warning(
                "preload",
                f"bot.memory_merge: the bots' memory is open to KSM, but KSM is off on this "
                f"machine ({KSM_RUN} is 0 or missing): nothing is merged until an administrator "
                f"switches it on (echo 1 > {KSM_RUN})",
            )
        else:
            self._log.info(
                "preload", "bot.memory_merge: the bots' memory is open to KSM (ksmd merges it)"
            )

    def _program_dirs(self) -> list[str]:
        if self.program is None or self.program.kind != "script":
            return []
        return [str((self.workdir / self.program.target).parent)]

    def _off(self, why: str) -> None:
        if self.off_why is None:
            self.off_why = why
            self._log.warning(
                "preload", f"bot.preload is on but cannot apply: {why}; bots start the normal way"
            )

    # -- code changes --------------------------------------------------------------

    def _watch(self, dirs: Sequence[str]) -> None:
        self._unwatch()
        for path in dict.fromkeys(watched_dirs(dirs, self.workdir)):
            try:
                self._watches.append(self.loop.watches.subscribe(path, CODE_MASK, self._on_code))
            except OSError:
                continue  # gone meanwhile, or the watch limit: the others still tell

    def _unwatch(self) -> None:
        for sub in self._watches:
            self.loop.watches.cancel(sub)
        self._watches.clear()

    def _on_code(self, events: Events) -> None:
        names = [name for name, _mask in events if code_file(name)]
        if not names:
            return
        self._changed = self._changed or (names[0] or "(events lost)")
        if self._code_timer is not None:
            self._code_timer.cancel()
        self._code_timer = self.loop.call_later(CODE_SETTLE_SEC, self._code_changed)

    def _code_changed(self) -> None:
        self._code_timer = None
        changed, self._changed = self._changed, None
        self._replace_server()  # its bots go on running the old code
        self._log.warning(
            "preload",
            f"bot code changed on disk ({changed}): a new fork server imports it for the "
            "next starts; running bots keep the old code until restarted: "
            "kissbotctl restart all --rolling N to run it",
        )
        if self.program is not None:
            self._start()
        self._resume()

    # -- queries and the end -------------------------------------------------------

    def child_pids(self) -> set[int]:
        return set() if self.server is None else {self.server.pid}

    def close(self) -> None:
        if self._code_timer is not None:
            self._code_timer.cancel()
        self._unwatch()
        if self.server is not None:
            self.server.close()
            self.server = None
