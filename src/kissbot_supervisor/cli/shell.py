"""``kissbotctl shell`` and kissbot-supervisor's own prompt: the old supervisor's commands.

A separate process that talks to the control socket like any ``kissbotctl``:
waiting here for a line never stalls supervision. Every command runs through
:func:`.ctl.main`, so each one has a single implementation, shared with the
subcommands; the old prompt's names are aliases (``start-all`` is ``start
all``, ``hub-status`` is ``status hub``). Any other kissbotctl subcommand
works as well (``events``, ``metrics``, ``logs CH -f``; Ctrl-C ends them).

Line editing is GNU readline: history in ``$XDG_STATE_HOME/kissbot-supervisor/history``
(else ``~/.local/state/...``), at most :data:`HISTORY_LENGTH` lines, appended
after every command so that a killed shell loses nothing; Tab completes the
commands and, after one that takes names, the channels (asked of the
supervisor, kept :data:`NAMES_TTL` seconds, asked again after ``reload``).
Ctrl-C clears the line (and ends a running command), as in bash; Ctrl-D,
``quit`` and ``exit`` leave.

Started by kissbot-supervisor (``--supervisor-pid``, see cli/supervisor.py)
the prompt belongs to that supervisor: ``quit``, ``exit`` and Ctrl-D stop it
and every process (SIGTERM to it, as the old supervisor's ``quit`` did), and
the prompt ends when the supervisor does (``PR_SET_PDEATHSIG``). Ctrl-C there
is what it is in ``kissbotctl shell`` (the supervisor leaves its own SIGINT to
the prompt while the prompt runs); at an empty line it says how to stop the
fleet, since an operator used to the old prompt may expect it to. The
supervisor's log lines share the terminal with it: each arrives wherever the
cursor is, so after each event (whose log line the supervisor has written just
before sending it) the prompt and the line being typed are drawn again below
it, when the supervisor's stderr is this terminal. The row where the prompt
was keeps it in front of the log line that came; log lines that are not
events are not followed by a redraw (Ctrl-L redraws).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time

from ..config.paths import APP_NAME
from ..protocol import build_request
from .client import Client, ControlError
from .ctl import EXIT_INTERRUPTED, NAME_COMMANDS, PROG
from .ctl import main as ctl_main

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

__all__ = ["HISTORY_LENGTH", "NAMES_TTL", "history_path", "run_shell", "translate"]

PROMPT = "kissbot> "
SUPERVISOR_PROMPT = "kissbot-supervisor> "
HISTORY_LENGTH = 1000
NAMES_TTL = 10.0  # seconds a list of channel names is trusted for completion
NAMES_TIMEOUT = 1.0  # a Tab never waits longer than this for the supervisor
STARTUP_TIMEOUT = 10.0  # the supervisor's prompt waits this long for its first answer
PR_SET_PDEATHSIG = 1

# The old prompt's one-word commands, as kissbotctl argv.
ALIASES: dict[str, tuple[str, ...]] = {
    "start-all": ("start", "all"),
    "stop-all": ("stop", "all"),
    "restart-all": ("restart", "all"),
    "hub-status": ("status", "hub"),
    "hub-restart": ("restart", "hub"),
}
# What the shell runs through kissbotctl, with a line of help each.
COMMANDS: dict[str, str] = {
    "status": "status [NAME...]      the supervisor, the hub and the bots",
    "start": "start NAME...         start bots ('hub', 'all' too) and wait until ready",
    "stop": "stop NAME...          stop bots (they stay stopped until started)",
    "restart": "restart NAME...       restart bots and wait until ready",
    "start-all": "start-all             start every process",
    "stop-all": "stop-all              stop every bot and the hub",
    "restart-all": "restart-all           restart every process",
    "hub-status": "hub-status            the hub's status",
    "hub-restart": "hub-restart           restart the hub (the bots follow)",
    "reload": "reload                re-read the config file and apply it",
    "logs": "logs NAME [-n N] [-f] a process's output (-f: until Ctrl-C)",
    "events": "events [NAME...]      state changes as they happen (until Ctrl-C)",
    "metrics": "metrics               the Prometheus metrics",
}
QUIT = ("quit", "exit")
# Commands that change the fleet's names: the completion list is stale after them.
_RENAMING = frozenset({"reload"})


def history_path(env: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/kissbot-supervisor/history``, else ``~/.local/state/...``."""
    from pathlib import Path

    state = env.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / APP_NAME / "history"


def translate(words: list[str]) -> list[str] | None:
    """kissbotctl argv for a shell line's words, or None for an unknown command."""
    head, rest = words[0], words[1:]
    if head in ALIASES:
        return [*ALIASES[head], *rest]
    if head in COMMANDS:
        return [head, *rest]
    return None


class _Names:
    """Channel names for completion, asked of the supervisor at most every NAMES_TTL s."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._channels: list[str] = []
        self._hub = False
        self._at: float | None = None

    def invalidate(self) -> None:
        self._at = None

    def refresh(self, timeout: float = NAMES_TIMEOUT) -> bool:
        """Ask the supervisor now; False (names kept as they were) when it does not answer."""
        try:
            with Client(self.socket_path, timeout) as client:
                response = client.request(build_request("status"))
        except ControlError:
            return False
        status = response.get("status")
        if response.get("ok") is not True or not isinstance(status, dict):
            return False
        bots = [b for b in status.get("bots") or [] if isinstance(b, dict)]
        self._channels = [b["channel"] for b in bots if isinstance(b.get("channel"), str)]
        self._hub = isinstance(status.get("hub"), dict)
        self._at = time.monotonic()
        return True

    def for_command(self, command: str) -> list[str]:
        if self._at is None or time.monotonic() - self._at > NAMES_TTL:
            self.refresh()
        extra = [x for x in NAME_COMMANDS.get(command, ()) if x != "hub" or self._hub]
        return [*self._channels, *extra]


def _completer(names: _Names) -> Callable[[str, int], str | None]:
    import readline

    matches: list[str] = []

    def complete(text: str, state: int) -> str | None:
        if state == 0:
            before = readline.get_line_buffer()[: readline.get_begidx()].split()
            if not before:
                candidates = [*COMMANDS, "help", *QUIT]
            else:
                argv = translate(before[:1])
                command = argv[0] if argv and len(argv) == 1 else ""
                candidates = names.for_command(command) if command in NAME_COMMANDS else []
            matches[:] = [c + " " for c in candidates if c.startswith(text)]
        return matches[state] if state < len(matches) else None

    return complete


def _setup_readline(names: _Names, history: Path) -> bool:
    """Editing, completion and history; False when history cannot be kept (said once)."""
    import readline

    readline.set_completer_delims(" \t\n")
    readline.set_completer(_completer(names))
    if "libedit" in (readline.__doc__ or ""):  # macOS's readline stand-in
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    readline.set_history_length(HISTORY_LENGTH)
    try:
        history.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(history, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        readline.read_history_file(history)
        if readline.get_current_history_length() > HISTORY_LENGTH:
            readline.write_history_file(history)  # truncates the file to the last lines
    except OSError as exc:
        print(f"{PROG}: history not kept: {history}: {exc.strerror or exc}", file=sys.stderr)
        return False
    return True


def _save_last(history: Path) -> None:
    import readline

    # Said at start-up, or the disk filled up since: the shell goes on without.
    with contextlib.suppress(OSError):
        readline.append_history_file(1, history)


def _help(supervisor_pid: int | None) -> str:
    quit_text = (
        "stop the supervisor and every process, and leave"
        if supervisor_pid is not None
        else "leave the shell (the supervisor goes on)"
    )
    lines = [
        "Commands (NAME: a channel, 'hub' or 'all'; Tab completes):",
        *(f"  {text}" for text in COMMANDS.values()),
        "  help                  this list",
        f"  quit, exit, Ctrl-D    {quit_text}",
        "Ctrl-C clears the line or ends a running command.",
    ]
    if supervisor_pid is not None:
        lines[-1] += " It never stops the fleet here: quit does."
    return "\n".join(lines) + "\n"


def _belong_to_supervisor(supervisor_pid: int) -> bool:
    """Die with the supervisor (SIGTERM, so readline restores the terminal); False if gone."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # Checked after prctl: a supervisor that died before it would send no signal.
    return os.getppid() == supervisor_pid


REDRAW_SIGNAL = signal.SIGUSR1


def _shares_terminal_with_supervisor() -> bool:
    """Whether the supervisor's log lines (our inherited stderr) go to our terminal."""
    try:
        return os.isatty(2) and os.fstat(2).st_rdev == os.fstat(0).st_rdev
    except OSError:
        return False


def _install_redraw(waiting: threading.Event) -> None:
    """On REDRAW_SIGNAL, draw the prompt and the line again on the cursor's row.

    The handler runs in the main thread at a safe point of readline's wait
    (Python checks signals when select() is interrupted), and uses readline's
    documented way to redraw after output: rl_on_new_line() then rl_redisplay().
    """
    import ctypes
    import readline

    try:  # readline's symbols, through the module that links it
        lib = ctypes.CDLL(readline.__file__)
        on_new_line, redisplay = lib.rl_on_new_line, lib.rl_redisplay
    except (OSError, AttributeError, TypeError):
        return  # libedit, or a static build: no redraw, as with any other log line

    out = sys.stdout.fileno()

    def redraw(signum: int, frame: object) -> None:
        if waiting.is_set():
            # Clear the cursor's row first: it is empty under a log line, or holds
            # the prompt of an earlier redraw when two events came close together.
            with contextlib.suppress(OSError):
                os.write(out, b"\r\x1b[K")
            on_new_line()
            redisplay()

    signal.signal(REDRAW_SIGNAL, redraw)


def _redraw_after_events(socket_path: str, waiting: threading.Event) -> None:
    """Thread: after each event the supervisor sends, have the main thread redraw the prompt."""
    main = threading.main_thread().ident
    assert main is not None
    # Every signal for the process goes to the main thread, which sits in readline:
    # readline's own handler (SIGHUP of a closed terminal, SIGTERM) only sets a flag
    # that the thread in readline's read() acts on. Caught here, the flag waited
    # for the next key, and a prompt whose terminal had closed lived on.
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    client = Client(socket_path, STARTUP_TIMEOUT)
    try:
        if client.request(build_request("events")).get("ok") is not True:
            return
        while client.read_stream_line() is not None:
            if waiting.is_set():
                signal.pthread_kill(main, REDRAW_SIGNAL)
    except ControlError:
        return  # the supervisor is going: nothing more to redraw for
    finally:
        client.close()


QUIT_HINT = (
    "(Ctrl-C does not stop the fleet here: type quit to stop the supervisor and every process)"
)


def _line_typed() -> bool:
    """Whether the line that a Ctrl-C has just abandoned held anything."""
    import readline

    # readline still holds the abandoned line until the next input() starts a new one.
    return bool(readline.get_line_buffer().strip())


def _on_term(signum: int, frame: object) -> None:
    raise SystemExit(0)  # input() returns through readline's clean-up: the terminal is reset


def _run_line(
    line: str, prefix: list[str], names: _Names, supervisor_pid: int | None, history: Path | None
) -> bool:
    """Carry out one line; False when it asks to leave."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return True
    if not words:
        return True
    if history is not None:
        _save_last(history)
    if words[0] in QUIT:
        return False
    if words[0] == "help":
        sys.stdout.write(_help(supervisor_pid))
        return True
    argv = translate(words)
    if argv is None:
        print(f"{PROG}: unknown command {words[0]!r}; type help for the list", file=sys.stderr)
        return True
    if ctl_main([*prefix, *argv]) == EXIT_INTERRUPTED:
        raise KeyboardInterrupt  # ended by Ctrl-C: as if it came here
    if argv[0] in _RENAMING:
        names.invalidate()
    return True


def run_shell(socket_path: str, timeout: float | None, supervisor_pid: int | None = None) -> int:
    """The prompt loop; returns the exit status (0)."""
    if supervisor_pid is not None and not _belong_to_supervisor(supervisor_pid):
        return 0
    signal.signal(signal.SIGTERM, _on_term)
    # Ctrl-C must reach the prompt even when started with SIGINT ignored (a
    # background job of a script): Python then leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # And a closed terminal must end it even when started with SIGHUP ignored
    # (`nohup kissbot-supervisor` on a terminal): the supervisor may live on, but
    # a prompt without its terminal has nothing left to do.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    names = _Names(socket_path)
    history = history_path(os.environ)
    interactive = sys.stdin.isatty()
    keep_history = interactive and _setup_readline(names, history)
    prefix = ["--socket", socket_path]
    if timeout is not None:
        prefix += ["--timeout", f"{timeout:g}"]
    prompt = PROMPT
    waiting = threading.Event()  # set while input() waits for a line
    if supervisor_pid is not None:
        prompt = SUPERVISOR_PROMPT
        # The first status answer comes once the supervisor's loop runs: waiting for it
        # keeps the prompt from being drawn in the middle of its start-up lines.
        names.refresh(STARTUP_TIMEOUT)
        if interactive and _shares_terminal_with_supervisor():
            _install_redraw(waiting)
            threading.Thread(
                target=_redraw_after_events, args=(socket_path, waiting), daemon=True
            ).start()
        print("Type help for the commands; quit stops the supervisor and every process.")
    elif interactive:
        print(f"kissbotctl shell on {socket_path}: type help for the commands, quit to leave.")
    kept = history if keep_history else None
    if not interactive:
        prompt = ""  # commands read from a pipe or file, as `sh < script` shows none
    while True:
        try:
            waiting.set()
            line = input(prompt)
        except EOFError:  # Ctrl-D
            print()
            break
        except KeyboardInterrupt:  # Ctrl-C: a fresh, empty line, as in bash
            print()
            if supervisor_pid is not None and interactive and not _line_typed():
                print(QUIT_HINT)
            continue
        finally:
            waiting.clear()
        try:
            if not _run_line(line, prefix, names, supervisor_pid, kept):
                break
        except KeyboardInterrupt:  # Ctrl-C at any point of a command: back to the prompt
            print()  # the terminal echoed ^C: the next prompt goes on a line of its own
        sys.stdout.flush()
    if supervisor_pid is not None:
        print("stopping the supervisor and every process")
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor_pid, signal.SIGTERM)
    return 0
