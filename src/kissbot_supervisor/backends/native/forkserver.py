"""The fork server: a bot program's modules imported once, every bot forked from it.

Run as ``PYTHON forkserver.py FD`` by the native backend (``preload.py``) with
the bots' own interpreter, in the workdir, as the bots' user, with the bots'
environment: started by the Spawner exactly as a bot is (its own process
group, ``PR_SET_PDEATHSIG``, stdin /dev/null, output to a drained pipe).
``FD`` is its end of a ``SOCK_SEQPACKET`` socket pair with the supervisor.
This file uses the standard library only: the bots' interpreter (a KissBot
venv) has none of this package.

Trust: importing the bot program's modules runs code from the workdir, which
the bots' user can write. That is what every bot does at its start, with the
same credentials, so the fork server is no more than one more bot. The
supervisor gives it nothing a bot does not get (an argv, an environment, the
bot's pipes and lock descriptor) and believes nothing it says without checking
(a PID must be the supervisor's own child; see preload.py).

The conversation, one JSON object per datagram:

- supervisor -> fork server, once: ``{"preload": {"kind": "script"|"module",
  "target": STR, "modules": [STR, ...], "merge": BOOL}}``
- fork server -> supervisor, once: ``{"ready": {"seconds": F, "imported": [...],
  "skipped": [...], "dirs": [...], "merge": null|""|SENTENCE}}`` (merge: not
  asked, done, or why not) or ``{"failed": SENTENCE}`` (then it exits)
- supervisor -> fork server: ``{"start": {"argv": [...], "env": {...}, "cwd": STR,
  "watchdog_pid": BOOL, "oom_score_adjust": INT|null, "supervisor": PID}}`` with
  the descriptors ``[output, report, *kept]`` (SCM_RIGHTS)
- fork server -> supervisor: ``{"pid": PID}`` or ``{"error": SENTENCE}``

Each bot is forked twice (a double fork): the intermediate process exits at
once, so the bot is handed to the nearest *subreaper*, the supervisor
(runtime/reaper.py). The bot is then the supervisor's own child, reaped,
watched (pidfd), signalled and reported exactly like a bot it exec'd; and the
fork server can be replaced (new code on disk) without touching a running bot.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_MEMORY_MERGE = 67  # linux/prctl.h, Linux 6.4: inherited by every fork
EINVAL = 22
SIGKILL = 9
MAX_MESSAGE = 1 << 18  # an environment and an argv, with room to spare
MAX_FDS = 16
MAX_DIRS = 256  # watched for code changes; more is a venv's whole site-packages
REPARENT_SEC = 5.0  # for the intermediate process to exit and hand the bot over
MAX_WORDS = 500  # a sentence for the supervisor's log, not a dump


# -- pure parts (unit-tested) ------------------------------------------------


def import_phase(source: str, filename: str = "<program>") -> list[tuple[str, bool]]:
    """The modules a program imports at its top level: ``(name, optional)`` pairs.

    Top level means outside any function or class body, but inside ``if``,
    ``try`` and ``with`` blocks (``if __name__ == "__main__":`` included). An
    import inside a ``try`` body is optional: the program copes with its
    absence (``try: import uvloop except ImportError: ...``). Relative imports
    are left out (the program is run as ``__main__``, not as a package member).
    ``from a import b`` names ``a`` and, optionally, ``a.b`` (it may be a
    submodule). Raises SyntaxError for a program that does not parse.
    """
    import ast  # here: the supervisor imports this module for its constants

    tree = ast.parse(source, filename)
    found: dict[str, bool] = {}

    def add(name: str, optional: bool) -> None:
        found[name] = found.get(name, True) and optional

    def visit(body: Iterable[ast.stmt], optional: bool) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, optional)
            elif isinstance(node, ast.ImportFrom):
                if node.level or not node.module:
                    continue
                add(node.module, optional)
                for alias in node.names:
                    if alias.name != "*":
                        add(f"{node.module}.{alias.name}", True)
            elif isinstance(node, ast.Try):
                visit(node.body, True)
                for handler in node.handlers:
                    visit(handler.body, True)
                visit(node.orelse, optional)
                visit(node.finalbody, optional)
            elif isinstance(node, (ast.If, ast.With)):  # a tuple: the bots' Python may be older
                visit(node.body, optional)
                visit(getattr(node, "orelse", []), optional)

    visit(tree.body, False)
    return list(found.items())


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"a message of {len(data)} bytes (at most {MAX_MESSAGE})")
    return data


def decode(data: bytes) -> dict[str, Any]:
    """One message; ValueError for anything but a JSON object of one known key."""
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not a JSON message") from None
    if not isinstance(message, dict) or len(message) != 1:
        raise ValueError("not a message of exactly one key")
    return message


def words(text: str) -> str:
    """A sentence from the other side, made fit for a log line: one line, short."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    return flat if len(flat) <= MAX_WORDS else flat[: MAX_WORDS - 3] + "..."


def exception_words(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


# -- the fork server ---------------------------------------------------------


class Job:
    """What the bot process runs once it has left the fork server's loop."""

    def __init__(self, start: dict[str, Any], fds: list[int], program: tuple[str, str]) -> None:
        self.argv: list[str] = [str(a) for a in start["argv"]]
        self.env = {str(k): str(v) for k, v in dict(start["env"]).items()}
        self.cwd = str(start["cwd"])
        self.watchdog_pid = bool(start.get("watchdog_pid"))
        oom = start.get("oom_score_adjust")
        self.oom_score_adjust = None if oom is None else int(oom)
        self.supervisor = int(start["supervisor"])
        self.output, self.report, self.kept = fds[0], fds[1], fds[2:]
        self.kind, self.target = program


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


def _receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """The next message and its descriptors; None at the supervisor's end (EOF)."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    return decode(data), list(fds)


def _prctl(option: int, value: int) -> int:
    import ctypes  # imported at the start of the fork server: shared by every bot

    libc = ctypes.CDLL(None, use_errno=True)
    return 0 if libc.prctl(option, value, 0, 0, 0) == 0 else ctypes.get_errno()


def _program_source(kind: str, target: str) -> tuple[str, str, list[str]]:
    """(source, file name, packages runpy imports first) of the program to run."""
    import importlib.util

    if kind == "script":
        path = os.path.abspath(target)
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace"), path, []
    spec = importlib.util.find_spec(target)
    if spec is None:
        raise ImportError(f"no module named {target!r}")
    parents = [".".join(target.split(".")[:i]) for i in range(1, target.count(".") + 1)]
    if spec.submodule_search_locations is not None:  # a package: runpy runs its __main__
        parents.append(target)
        spec = importlib.util.find_spec(f"{target}.__main__")
        if spec is None:
            raise ImportError(f"{target} is a package without a __main__ module")
    if spec.origin is None or not spec.has_location:
        raise ImportError(f"{target} is not a module read from a file")
    with open(spec.origin, "rb") as f:
        return f.read().decode("utf-8", "replace"), spec.origin, parents


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def shared_channels(own_fds: Iterable[int]) -> list[str]:
    """Descriptors the imports opened that forked bots must not share: sockets, pipes,
    epoll and event fds (a regular file, e.g. a log opened at import, is left alone)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2 or fd in own_fds:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the directory listdir itself had open
        if target.startswith(("socket:", "pipe:", "anon_inode:")):
            found.append(f"descriptor {fd} ({target})")
    return found


def preload(
    kind: str,
    target: str,
    extra: Sequence[str],
    own_fds: Sequence[int] = (),
    *,
    merge: bool = False,
) -> dict[str, Any]:
    """Import what the program imports, then freeze the heap: the report for the
    supervisor. Raises RuntimeError with a sentence when forking would be unsafe."""
    import importlib

    started = time.monotonic()
    # Open before the imports: not theirs (started by hand, a shell's pipe is here).
    # Not the one listdir itself had open: closed by now, its number is free.
    before = [fd for fd in map(int, os.listdir("/proc/self/fd")) if _is_open(fd)]
    # What `python3 main.py` / `python3 -m mod` put first on sys.path (this file's
    # own directory was put there by the way the fork server itself was started).
    if kind == "script":
        sys.path[0] = os.path.dirname(os.path.abspath(target))
    else:
        sys.path[0] = os.getcwd()
    try:
        source, filename, parents = _program_source(kind, target)
        wanted = [(p, False) for p in parents]
        wanted += import_phase(source, filename)
    except (OSError, ImportError, SyntaxError, ValueError) as e:
        raise RuntimeError(f"cannot read the program {target}: {exception_words(e)}") from None
    wanted += [(name, False) for name in extra]
    imported: list[str] = []
    skipped: list[str] = []
    for name, optional in wanted:
        try:
            importlib.import_module(name)
        except Exception as e:  # the program's own modules may raise anything
            if optional:
                skipped.append(name)
                continue
            raise RuntimeError(f"importing {name} failed: {exception_words(e)}") from None
        imported.append(name)
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise RuntimeError(
            f"{threads} threads run after the imports (one module starts a thread when "
            "imported): a fork copies only the calling thread and may copy a lock held by "
            "another one"
        )
    shared = shared_channels([*own_fds, *before])
    if shared:
        raise RuntimeError(
            f"a module opened {shared[0]} when imported (an event loop, a connection): every "
            "bot forked from here would share it"
        )
    _flush_stdio()
    gc.collect()
    gc.freeze()  # the imported objects stay shared: no child's collector writes to them
    return {
        "seconds": round(time.monotonic() - started, 3),
        "imported": imported,
        "skipped": skipped,
        "dirs": _code_dirs(os.getcwd()),
        "merge": _merge_memory() if merge else None,
    }


def _merge_memory() -> str:
    """Open this process's memory, and so every bot's forked from it, to KSM: the
    pages a bot copies (a reference count written, say) stay identical among the
    bots, at the same addresses, and ksmd can merge them again. "" when done,
    else why not, in words."""
    err = _prctl(PR_SET_MEMORY_MERGE, 1)
    if err == 0:
        return ""
    if err == EINVAL:
        return (
            f"this kernel ({os.uname().release}) cannot merge a process's memory "
            "(PR_SET_MEMORY_MERGE needs Linux 6.4 or later)"
        )
    return f"prctl(PR_SET_MEMORY_MERGE) failed: {os.strerror(err)}"


def _code_dirs(workdir: str) -> list[str]:
    """Directories of the imported modules' files under the workdir (a `git pull`)."""
    prefix = os.path.join(os.path.realpath(workdir), "")
    dirs: set[str] = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            directory = os.path.dirname(os.path.realpath(path))
            if os.path.join(directory, "").startswith(prefix):
                dirs.add(directory)
    return sorted(dirs)[:MAX_DIRS]


def _flush_stdio() -> None:
    # Nothing buffered may be copied into a child (it would be written twice).
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()


def serve(sock: socket.socket, program: tuple[str, str]) -> Job | int:
    """Fork a bot per request until the supervisor closes its end. Returns the
    exit status in the fork server, and a Job in a bot (never anything else)."""
    while True:
        try:
            received = _receive(sock)
        except (OSError, ValueError):
            return 1
        if received is None:
            return 0
        message, fds = received
        try:
            job = Job(message["start"], fds, program)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            for fd in fds:
                os.close(fd)
            _send(sock, {"error": f"a malformed start request: {exception_words(e)}"})
            continue
        outcome = _fork_bot(job)
        if isinstance(outcome, Job):
            sock.detach()  # its descriptor is closed in become(): no object owns it then
            return outcome
        for fd in fds:
            os.close(fd)
        _send(sock, outcome)


def _fork_bot(job: Job) -> Job | dict[str, Any]:
    """Fork twice; the fork server gets the reply, the bot gets the Job."""
    r, w = os.pipe()
    _flush_stdio()
    try:
        middle = os.fork()
    except OSError as e:
        os.close(r)
        os.close(w)
        return {"error": f"fork failed: {e.strerror}"}
    if middle == 0:
        os.close(r)
        try:
            pid = os.fork()
            if pid:
                # The bot's own group before its PID is told: a stop at once finds it.
                os.setpgid(pid, pid)
                os.write(w, b"%d" % pid)
        except OSError as e:
            os.write(w, f"cannot fork the bot: {e.strerror}".encode())
            os._exit(1)
        except BaseException:
            os._exit(1)
        if pid:
            os._exit(0)
        os.close(w)
        return job
    os.close(w)
    answer = b""
    while chunk := os.read(r, 256):
        answer += chunk
    os.close(r)
    os.waitpid(middle, 0)  # once reaped, the bot has been handed to the supervisor
    if answer.isdigit():
        return {"pid": int(answer)}
    return {"error": words(answer.decode(errors="replace")) or "the fork failed"}


def become(job: Job, server_fd: int) -> None:
    """In the bot: take the bot's descriptors, credentials and environment, as an
    exec would, then run the program as ``__main__``. Never returns into the
    server: the program's end is the interpreter's end, with its exit status."""
    stage = "wait for the supervisor to adopt it"
    try:
        os.close(server_fd)
        os.setpgid(0, 0)
        deadline = time.monotonic() + REPARENT_SEC
        while os.getppid() != job.supervisor:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"it was handed to PID {os.getppid()}, not to the supervisor (PID "
                    f"{job.supervisor}): the supervisor is not the subreaper of its fleet"
                )
            time.sleep(0.0002)
        stage = "set its parent-death signal"
        _prctl(PR_SET_PDEATHSIG, SIGKILL)
        if os.getppid() != job.supervisor:  # the supervisor died before prctl took effect
            os._exit(0)
        os.dup2(job.output, 1)
        os.dup2(job.output, 2)
        os.close(job.output)
        for fd in job.kept:
            os.set_inheritable(fd, True)  # as after an exec: its own children get them
        if job.oom_score_adjust is not None:
            stage = "set its OOM score adjustment"
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(job.oom_score_adjust))
        stage = f"change directory to {job.cwd}"
        os.chdir(job.cwd)
        stage = "take its environment"
        env = dict(job.env)
        if job.watchdog_pid:
            env["WATCHDOG_PID"] = str(os.getpid())
        os.environ.clear()
        os.environ.update(env)
        sys.argv = list(job.argv[2:] if job.kind == "script" else job.argv[3:])
        sys.argv.insert(0, job.target if job.kind == "script" else "-m")
        sys.orig_argv = list(job.argv)
    except BaseException as e:
        report = f"cannot {stage}: {e.strerror if isinstance(e, OSError) else e}"
        try:
            os.write(job.report, report.encode()[:4096])
        finally:
            os._exit(127)
    os.close(job.report)  # the "exec" succeeded: the supervisor reads EOF
    _run(job)


def _run(job: Job) -> None:
    """The program, as the interpreter runs it: SystemExit and KeyboardInterrupt
    reach the interpreter's top level (exit status, atexit, threads joined,
    streams flushed); any other exception is printed by ``sys.excepthook``
    without the fork server's frames, and the status is 1."""
    import runpy

    try:
        if job.kind == "script":
            runpy.run_path(job.target, run_name="__main__")
        else:
            runpy.run_module(job.target, run_name="__main__", alter_sys=True)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as e:
        tb = e.__traceback__
        # By module, not file name: runpy is frozen ("<frozen runpy>") in 3.11+.
        ours = (globals(), vars(runpy))
        while tb is not None and any(tb.tb_frame.f_globals is g for g in ours):
            tb = tb.tb_next
        # The hook prints the exception's own __traceback__ (3.11), not its argument.
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        sys.exit(1)


def main(argv: list[str]) -> Job | int:
    sock = socket.socket(fileno=int(argv[1]))
    try:
        received = _receive(sock)
        if received is None:
            return 0
        message, fds = received
        for fd in fds:
            os.close(fd)
        setup = message["preload"]
        program = (str(setup["kind"]), str(setup["target"]))
        extra = [str(m) for m in setup.get("modules", [])]
        merge = setup.get("merge") is True
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"fork server: a malformed first request: {exception_words(e)}", file=sys.stderr)
        return 2
    try:
        report = preload(*program, extra, own_fds=[sock.fileno()], merge=merge)
    except RuntimeError as e:
        _send(sock, {"failed": words(str(e))})
        return 1
    _send(sock, {"ready": report})
    return serve(sock, program)


if __name__ == "__main__":
    _outcome = main(sys.argv)
    if not isinstance(_outcome, Job):
        sys.exit(_outcome)
    # In a bot: the loop and main() have returned; only the program runs from here.
    become(_outcome, int(sys.argv[1]))
