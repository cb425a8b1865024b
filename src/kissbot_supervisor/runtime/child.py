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
cost the daemon 0.6 MiB. The daemon waits for the child: they are a few tens
of milliseconds, at start-up, on reload and when a token changes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
# second or two. Beyond this it is stuck (see _read_until_end).
TIMEOUT_SEC = 20.0
MAX_ANSWER = 1 << 20  # a config's parse, a fleet's token states: far below this


class ChildError(Exception):
    """The child could not be run."""


def run_module(module: str, data: bytes, timeout: float = TIMEOUT_SEC) -> tuple[bytes, int]:
    """Run ``module``'s ``main()`` in an isolated child with ``data`` on its stdin;
    what it wrote on stdout, and its exit status (negative: the signal that ended it)."""
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
        # The input is small (a config, one token); writing it all before reading
        # cannot fill both pipes.
        with os.fdopen(in_w, "wb") as to_child:
            to_child.write(data)
    except BrokenPipeError:
        pass  # it ended without reading: its status tells why
    answer = _read_until_end(out_r, pid, module, timeout)
    _pid, status = os.waitpid(pid, 0)
    return answer, os.waitstatus_to_exitcode(status)


def _read_until_end(fd: int, pid: int, module: str, timeout: float) -> bytes:
    """All the child writes, or :class:`ChildError` once ``timeout`` has passed.

    A deadline because what the child reads is the checkout's: a FIFO put in
    place of ``kissbot.db`` after our check, which SQLite opens by name, would
    block the child, and the daemon with it. Killed, it is an error like any.
    """
    import select
    import signal
    import time

    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    # poll, not select: a native fleet of a few hundred bots has descriptors
    # above 1024, which select() refuses.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise ChildError(f"{module} gave no answer within {timeout:g} s; killed")
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER:
                # What it reads is the checkout's (a DB with rows no token needs).
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise ChildError(f"{module} answered more than {MAX_ANSWER} bytes; killed")
    finally:
        os.close(fd)


def describe_exit(what: str, code: int) -> str:
    """``what`` ended without an answer, in words."""
    if code < 0:
        import signal  # resident anyway; lazy to keep this module's imports plain

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"{what} was killed by {name} without an answer"
    return f"{what} exited {code} without an answer"
