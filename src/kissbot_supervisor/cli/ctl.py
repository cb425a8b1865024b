"""``kissbotctl``: ask a running kissbot-supervisor for its status, start, stop, restart,
reload, metrics and live events; show a process's output; an interactive shell.

Exit codes:

* ``status``: 0 when every wanted process (of those shown) runs, 3 otherwise;
* ``start``/``stop``/``restart``: 0 when every name succeeded, else 1;
* ``logs``: 0, or 1 for an unknown name or an unreadable log;
* ``events``: 130 when ended with Ctrl-C, 1 when the supervisor goes away;
* ``top``: 0 when left with ``q`` (or after its one frame off a terminal), 130 with Ctrl-C;
* 1 when the supervisor cannot be reached or answers with an error;
* 2 for a usage error.

``--json`` (status, start, stop, restart, reload, events) prints machine
output with the stable keys listed in docs/operations.md; errors stay one
line on stderr and nothing on stdout.

With the supervisor down (no control socket, or a stale one) and systemd as
PID 1, ``status`` reads the units' state from systemd itself
(:mod:`..systemd.offline`) and says so on its first line; ``logs`` reads the
journal (systemd) or the files under ``--workdir`` (native) without it.

Errors are one line on stderr, ``kissbotctl: ...``. This program starts in a
few tens of milliseconds: it imports only the standard library's ``argparse``,
``json``, ``os``, ``socket`` and ``sys`` (plus what they need) and our own
import-light :mod:`..paths`, :mod:`..protocol`, :mod:`..client` and
:mod:`..render`. Keep it that way: no yaml, psutil or asyncio here. What only
one subcommand needs is imported in it: :mod:`.logs` (and systemd-python)
by ``logs`` and ``status NAME`` (with :mod:`.detail`), :mod:`.offline`
(jeepney) by ``status`` with the supervisor down, :mod:`.shell` (readline) by
``shell``, :mod:`.completion` by ``completion``; :mod:`.top` is read for the
defaults of its flags (it imports nothing more at load time) and does its
terminal work only in ``top``.

Why one module of 830 lines: it is the one program's argument parser and its
subcommands' small bodies; what a subcommand needs beyond that lives in its
own module (logs, offline, shell, completion, render, client).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import __version__
from ..config.paths import (
    CONTROL_SOCKET_ENV,
    SYSTEM_RUNTIME_DIR,
    default_control_socket,
    instance_name,
    instance_sockets,
)
from ..kissbot.names import process_name
from ..protocol import (
    ALL,
    EXIT_NOT_ALL_RUNNING,
    EXIT_OK,
    PROGRESS,
    ROLLING,
    ProtocolError,
    UnknownNameError,
    build_request,
)
from ..status import (
    STATES,
    TROUBLE_ORDER,
    UnknownStateError,
    exit_code_for_status,
    filter_states,
    filter_status,
    parse_states,
    troubled_first,
)
from .client import DEFAULT_TIMEOUT, Client, ConnectError, ControlError
from .render import clean, fit_stream, format_event, progress_text, render_status, use_color

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: start-up cost
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, TextIO

__all__ = [
    "COMPLETE_NAMES",
    "NAME_COMMANDS",
    "OPTION_WORDS",
    "SUCCESS_RESULTS",
    "build_parser",
    "main",
]

PROG = "kissbotctl"
DEFAULT_LOG_LINES = 10
# --since's forms, for its help (cli/fleetlogs.py parses them; not imported at start-up).
SINCE_HELP = "10m, 2h, 1d (that long ago), 14:30 (today), 2026-11-24 14:30, today, yesterday"
SYSTEMD_RUN_DIR = "/run/systemd/system"  # exists iff PID 1 is systemd
EXIT_FAILURE = 1
EXIT_USAGE = 2
# Per-name results that count as success: the wanted end state holds, whether
# this request brought it about or it already did.
SUCCESS_RESULTS = frozenset({"started", "stopped", "restarted", "already running", "not running"})
# The keys of one entry of `start|stop|restart --json`'s "results", in order.
RESULT_KEYS = ("name", "ok", "result", "pid", "state", "message")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
# status --sort: the config's order (the default), by channel, troubled first.
SORT_ORDERS = ("config", "name", "state")
# The hidden subcommand the completion scripts call for names (quiet and quick).
COMPLETE_NAMES = "__complete-names"
COMPLETE_TIMEOUT = 1.0
# Which names each subcommand takes, for completion: the channels, plus these.
NAME_COMMANDS: dict[str, tuple[str, ...]] = {
    "status": ("hub", "all"),
    "start": ("hub", "all"),
    "stop": ("hub", "all"),
    "restart": ("hub", "all"),
    "logs": ("hub", "all"),
    "events": ("hub", "supervisor"),
}
# For completion, the words of the options that take a comma list of them
# (argparse's `choices` would refuse the list).
OPTION_WORDS: dict[str, tuple[str, ...]] = {"--state": STATES}


class _Failure(Exception):
    """Ends the command with one line on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --- arguments --------------------------------------------------------------


def _bot_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bots") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more bots")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Accepted before and after the subcommand. The subcommand's copies default
    # to SUPPRESS so that they never overwrite a value given before it.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=default,
        help=f"control socket (default: ${CONTROL_SOCKET_ENV}, else that of the supervisor "
        "of --workdir, else the only one running)",
    )
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        default=default,
        help="the KissBot root whose supervisor to talk to, when several run on this host "
        "(default: the current directory, else the only one running); logs reads its log "
        "files when no supervisor runs",
    )
    parser.add_argument(
        "--timeout",
        metavar="SEC",
        type=_seconds,
        default=default,
        help=f"give up on an answer after SEC seconds (default: {DEFAULT_TIMEOUT:g}); start, "
        "stop and restart wait as long as the supervisor says it will, plus SEC",
    )


def build_parser() -> argparse.ArgumentParser:
    """kissbotctl's whole command line (the completion scripts are generated from it)."""
    parser = _Parser(
        prog=PROG,
        description="Control a running kissbot-supervisor over its control socket.",
        epilog="NAME is a channel login, 'hub' or 'all'. "
        "Exit status: 0 ok; 1 error or unreachable supervisor; 2 usage; "
        "3 (status) a wanted process, or the supervisor itself, is not running; "
        "130 (events, logs -f, top) ended by Ctrl-C.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, description: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=description, description=description)
        _add_global_options(cmd, suppress=True)
        return cmd

    status = add(
        "status",
        "Show the supervisor, the hub and the bots (exit 3 if a wanted one, or the "
        "supervisor, is down).",
    )
    status.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="show these in detail, as systemctl status does: since when, STATUS= text, "
        "command, last exits, token, log and its last lines (default: the table of all)",
    )
    status.add_argument(
        "--state",
        metavar="STATE[,STATE...]",
        type=_states,
        help=f"list only the processes in these states ({', '.join(STATES)}; any case); "
        "the header still counts them all",
    )
    status.add_argument(
        "--sort",
        choices=SORT_ORDERS,
        default=SORT_ORDERS[0],
        metavar="ORDER",
        help="the bots' order: config (as in the config, the default), name, or state "
        f"(troubled first: {', '.join(TROUBLE_ORDER)})",
    )
    status.add_argument(
        "-n",
        "--lines",
        metavar="N",
        type=_line_count,
        default=DEFAULT_LOG_LINES,
        help=f"log lines in the detail of a NAME, or 'all' (default: {DEFAULT_LOG_LINES})",
    )
    status.add_argument("--json", action="store_true", help="print the status object as JSON")
    for name, verb in (("start", "Start"), ("stop", "Stop"), ("restart", "Restart")):
        cmd = add(
            name,
            f"{verb} bots or the hub; wait for each one's outcome as long as the supervisor "
            "says it will (a bot's start timeout), with progress on a terminal; exit 1 if "
            "one failed.",
        )
        cmd.add_argument("names", nargs="+", metavar="NAME", help="channel login, 'hub' or 'all'")
        cmd.add_argument("--json", action="store_true", help="print the results as JSON")
        if name == "restart":
            cmd.add_argument(
                "--rolling",
                metavar="N",
                type=_bot_count,
                help="keep at most N of the bots down at once: the next is stopped when one "
                "is ready again or has failed (a code deploy; without it, bots are restarted "
                "as fast as Twitch's login limit allows, the hub at once)",
            )
    reload = add(
        "reload", "Re-read the config file and apply the changes (bots added, removed, changed)."
    )
    reload.add_argument("--json", action="store_true", help="print the changes as JSON")
    logs = add(
        "logs",
        "Print processes' output: their units' journal (systemd backend) or their log "
        "files (native backend), as the supervisor says; without a supervisor, the files "
        "under --workdir, else the journal when systemd runs. Several, or all, are "
        "interleaved by time, each line after its process's name.",
    )
    logs.add_argument(
        "names", nargs="+", metavar="NAME", help="channel login, 'hub', or 'all' (every one)"
    )
    logs.add_argument(
        "-n",
        "--lines",
        metavar="N",
        type=_line_count,
        default=argparse.SUPPRESS,  # absent: 10, or all with --since or --grep
        help=f"print the last N lines, or 'all' (default: {DEFAULT_LOG_LINES}, or all with "
        "--since or --grep)",
    )
    logs.add_argument(
        "--since",
        metavar="WHEN",
        type=_since,
        help=f"only lines from then on: {SINCE_HELP} (local time)",
    )
    logs.add_argument(
        "--grep",
        metavar="REGEX",
        type=_grep,
        help="only lines whose text matches (a Python regular expression; case-insensitive "
        "unless it has a capital)",
    )
    logs.add_argument(
        "-f", "--follow", action="store_true", help="then print new lines as they come (Ctrl-C)"
    )
    # Journal files of another system (journalctl -D): for tests run from the host.
    logs.add_argument("--journal-dir", metavar="DIR", help=argparse.SUPPRESS)
    events = add(
        "events",
        "Print the supervisor's state changes as they happen, one line each, until Ctrl-C.",
    )
    events.add_argument(
        "names", nargs="*", metavar="NAME", help="only these (channel, 'hub', 'supervisor')"
    )
    events.add_argument("--json", action="store_true", help="print each event as a JSON object")
    add("metrics", "Print the supervisor's metrics (Prometheus text format).")
    from .top import DEFAULT_INTERVAL, SORTS

    top = add(
        "top",
        "A live view redrawn in place: state, CPU, memory, restarts and uptime per process, "
        "and the fleet's totals; q or Ctrl-C leaves, s/n/c/m/r sort. Not on a terminal: "
        "one frame, measured over one interval.",
    )
    top.add_argument(
        "-i",
        "--interval",
        metavar="SEC",
        type=_seconds,
        default=DEFAULT_INTERVAL,
        help=f"refresh every SEC seconds (default: {DEFAULT_INTERVAL:g})",
    )
    top.add_argument(
        "--sort",
        choices=tuple(SORTS),
        default="state",
        help="row order: the troubled first (state, the default), or by name, cpu, memory "
        "or restarts; the hub stays on top",
    )
    shell = add(
        "shell",
        "An interactive prompt with the old supervisor's commands, history and completion.",
    )
    # Set by kissbot-supervisor for its own prompt: quit then stops that supervisor.
    shell.add_argument("--supervisor-pid", type=int, default=None, help=argparse.SUPPRESS)
    completion = add(
        "completion",
        "Print the completion script for bash or zsh "
        "(kissbotctl completion bash > /etc/bash_completion.d/kissbotctl).",
    )
    completion.add_argument("shell_name", metavar="SHELL", choices=("bash", "zsh"))
    return parser


def _complete_names_parser() -> argparse.ArgumentParser:
    """``kissbotctl [--socket PATH] __complete-names [COMMAND]``: the names a completion
    script may offer. A parser of its own, not a subcommand: argparse would offer
    a hidden subcommand among the choices of a mistyped one."""
    parser = argparse.ArgumentParser(prog=PROG, add_help=False)
    _add_global_options(parser, suppress=False)
    parser.add_argument("command", choices=(COMPLETE_NAMES,))
    parser.add_argument("for_command", nargs="?", default="status", metavar="COMMAND")
    return parser


class _Parser(argparse.ArgumentParser):
    """An unknown subcommand is answered with the closest ones, not the whole list."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's own hook for a value outside `choices` (the subcommand's name).
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            import difflib

            commands = list(action.choices)
            close = difflib.get_close_matches(str(value), commands, n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise argparse.ArgumentError(
                action, f"unknown command {value!r}{hint} (commands: {', '.join(commands)})"
            )
        super()._check_value(action, value)


def _states(text: str) -> tuple[str, ...]:
    """``--state failed,Backoff``: the states, checked (a typo is an error, not an empty list)."""
    try:
        return parse_states(text)
    except UnknownStateError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _since(text: str) -> float:
    import time

    from .fleetlogs import parse_since

    try:
        return parse_since(text, time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _grep(text: str) -> Callable[[str], bool]:
    from .fleetlogs import grep_matcher

    try:
        return grep_matcher(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _line_count(text: str) -> int | None:
    """A number of lines for ``-n``: a whole number >= 0, or ``all`` (None)."""
    if text == "all":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of lines (or 'all')")
    return int(text)


def _default_socket(env: Mapping[str, str], workdir: str | None = None) -> str:
    """The socket when --socket is not given.

    ``$KISSBOT_CONTROL_SOCKET``; else the supervisor of ``workdir`` (default: the
    current directory or one above it), which has a runtime directory of its own
    named after it (config/paths.py); else the one supervisor that answers here,
    in a directory of its own or a service's (``/run/kissbot-supervisor``: a user
    other than root looks there too); several are an error that names them.
    """
    from pathlib import Path

    explicit = env.get(CONTROL_SOCKET_ENV)
    if explicit:
        return explicit
    primary = default_control_socket(env)
    shared = [primary.parent]
    if primary.parent != SYSTEM_RUNTIME_DIR:
        shared.append(SYSTEM_RUNTIME_DIR)
    start = Path(workdir or os.getcwd()).resolve()
    for directory in [start] if workdir else [start, *start.parents]:
        for base in shared:
            mine = base / instance_name(directory) / primary.name
            if _exists(str(mine)):
                return str(mine)
    candidates = [base / primary.name for base in shared]
    candidates += [s for base in shared for s in instance_sockets(base)]
    live = [str(c) for c in candidates if _answers(str(c))]
    if len(live) == 1:
        return live[0]
    if len(live) > 1:
        raise _Failure(
            f"{len(live)} supervisors run on this host ({', '.join(live)}) and none for "
            f"{start}; say which: --workdir DIR (its KissBot root) or --socket PATH"
        )
    return str(primary)


def _answers(path: str) -> bool:
    """Whether a supervisor listens there (a stale socket file refuses at once)."""
    import socket

    if not _exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(COMPLETE_TIMEOUT)
        try:
            probe.connect(path)
        except PermissionError:
            return True  # there, but ours to be refused when we talk to it
        except OSError:
            return False
    return True


def _exists(path: str) -> bool:
    try:
        os.lstat(path)
    except PermissionError:
        return True  # there, but ours to be refused when we connect
    except OSError:
        return False
    return True


def _systemd_is_init() -> bool:
    """Whether PID 1 is systemd (the test of ``sd_booted()``)."""
    return os.path.isdir(SYSTEMD_RUN_DIR)


def _terminal_width(stream: TextIO, env: Mapping[str, str]) -> int:
    columns = env.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        # A pseudo-terminal nobody sized (script(1), some CI runners) says 0 columns.
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


# --- commands ---------------------------------------------------------------


def _ask(client: Client, obj: Mapping[str, Any]) -> dict[str, Any]:
    response = client.request(obj)
    if response.get("ok") is not True:
        raise _Failure(str(response.get("error") or "the supervisor refused the request"))
    return response


def _status_object(response: Mapping[str, Any]) -> dict[str, Any]:
    status = response.get("status")
    if not isinstance(status, dict):
        raise _Failure("the supervisor's answer has no status object")
    return status


def _cmd_status(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return _show_status(_status_object(_ask(client, build_request("status"))), args, out)


def _cmd_status_offline(args: argparse.Namespace, out: TextIO, down: ConnectError) -> int:
    """``status`` with no supervisor listening: ask systemd, if it is PID 1.

    Anywhere else the supervisor's absence is the error, word for word.
    """
    if not _systemd_is_init():
        raise down
    from .offline import OfflineError, read_status

    try:
        status = read_status(args.timeout or DEFAULT_TIMEOUT)
    except OfflineError as exc:
        raise _Failure(f"{down.message}; systemd could not be read either: {exc.message}") from None
    # Whatever systemd still runs, nothing supervises it (and a channel whose unit
    # is gone is not even listed): "not everything that should run is running".
    return max(_show_status(status, args, out), EXIT_NOT_ALL_RUNNING)


def _show_status(status: Mapping[str, Any], args: argparse.Namespace, out: TextIO) -> int:
    try:
        named = filter_status(status, args.names)
    except UnknownNameError as exc:
        raise _Failure(str(exc)) from None
    if args.sort == "state":
        named = troubled_first(named)
    elif args.sort == "name" and isinstance(named.get("bots"), list):
        named["bots"] = sorted(named["bots"], key=lambda b: str(b.get("channel")))
    # The exit code is that of the processes listed: `status --state failed` exits 0
    # when none is failed.
    shown = named if args.state is None else filter_states(named, args.state)
    if args.json:
        out.write(json.dumps(shown, indent=2, ensure_ascii=False) + "\n")
    elif args.names and ALL not in (process_name(n) for n in args.names):
        _show_details(status, shown, args, out)
    else:
        env = os.environ
        width = _terminal_width(out, env)
        out.write(render_status(named, color=use_color(out, env), width=width, states=args.state))
    return exit_code_for_status(shown)


def _show_details(
    status: Mapping[str, Any], shown: Mapping[str, Any], args: argparse.Namespace, out: TextIO
) -> None:
    """``status NAME...``: each process named (and in --state) in detail, with its log."""
    import time

    from .detail import render_detail
    from .logs import last_lines

    procs = [shown["hub"]] if isinstance(shown.get("hub"), dict) else []
    procs += [b for b in shown.get("bots") or [] if isinstance(b, dict)]
    if not procs:
        states = " or ".join(args.state or ())
        out.write(f"none of {', '.join(args.names)} is {states}\n")
        return
    env = os.environ
    color, width, cut = use_color(out, env), _terminal_width(out, env), out.isatty()
    for index, proc in enumerate(procs):
        name = str(proc.get("name"))
        where, lines, problem = last_lines(status, name, args.lines)
        text = render_detail(
            proc,
            color=color,
            width=width,
            now=time.time(),
            log_where=where,
            log_lines=lines,
            log_problem=problem,
            cut_log_lines=cut,
        )
        out.write(("\n" if index else "") + text)


def _result_ok(result: Mapping[str, Any]) -> bool:
    explicit = result.get("ok")
    if isinstance(explicit, bool):
        return explicit
    return result.get("result") in SUCCESS_RESULTS


def _result_line(result: Mapping[str, Any]) -> str:
    line = f"{result.get('name', '?')}: {result.get('result', 'no result')}"
    pid = result.get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool):
        line += f" (PID {pid})"
    message = result.get("message")
    if isinstance(message, str) and message.strip():
        line += f": {' '.join(message.split())}"
    return line


def _json_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of ``--json`` results: exactly :data:`RESULT_KEYS`, whatever the daemon adds."""
    entry = {key: result.get(key) for key in RESULT_KEYS}
    entry["ok"] = _result_ok(result)
    if not isinstance(entry["message"], str) or not entry["message"].strip():
        entry["message"] = None
    return entry


class _Progress:
    """The line ``start``/``stop``/``restart`` redraw on a terminal while the supervisor
    works; on anything else (a pipe, a log) nothing: scripts read the results."""

    def __init__(self, cmd: str, err: TextIO) -> None:
        import time

        self._clock = time.monotonic
        self.cmd = cmd
        self.err = err
        self.shown = err.isatty()
        self.started = self._clock()
        self.limit = 0.0  # seconds from the start the supervisor waits at most
        self.waiting: list[str] = []
        self.done: list[Mapping[str, Any]] = []  # results said so far, in order
        self.total = 0

    def __call__(self, progress: Mapping[str, Any] | None) -> None:
        now = self._clock()
        if progress is not None:
            self.waiting = [str(n) for n in progress.get("waiting") or []]
            self.done += [r for r in progress.get("done") or [] if isinstance(r, dict)]
            self.total = max(self.total, len(self.waiting))
            self.limit = now - self.started + float(progress.get("wait_sec") or 0)
        if self.shown and self.waiting:
            width = _terminal_width(self.err, os.environ)
            line = progress_text(
                self.cmd, self.waiting, self.total, now - self.started, self.limit, width
            )
            self.err.write("\r\x1b[K" + line)
            self.err.flush()

    def clear(self) -> None:
        if self.shown and self.total:
            self.err.write("\r\x1b[K")
            self.err.flush()


def _cmd_named(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    try:
        rolling = getattr(args, "rolling", None)
        request = build_request(args.command, args.names, progress=True, rolling=rolling)
    except ProtocolError as exc:
        raise _Failure(exc.message, EXIT_USAGE) from None
    # The supervisor says how long it will wait (a bot's start timeout, not our
    # --timeout): the client waits that long, and shows it on a terminal.
    progress = _Progress(args.command, sys.stderr)
    try:
        response = client.request(request, progress)
    except ControlError as exc:
        if not progress.total:
            raise
        # The outcomes said before the supervisor went quiet are known: each one, then
        # which are not.
        if not args.json:
            out.write("".join(_result_line(r) + "\n" for r in progress.done))
        waiting = ", ".join(progress.waiting) or "none"
        raise _Failure(f"{exc.message}; no outcome for: {waiting}") from None
    finally:
        progress.clear()
    refused = str(response.get("error", ""))
    if rolling is not None and refused.startswith(
        (f"unknown key {ROLLING!r}", f"unknown key {PROGRESS!r}")
    ):
        raise _Failure(
            "the supervisor runs an older version that cannot do a rolling restart, so "
            "nothing was restarted; restart the supervisor itself to run the new version, "
            "or leave out --rolling"
        )
    if refused.startswith(f"unknown key {PROGRESS!r}"):
        # A supervisor older than this kissbotctl (an upgrade under way) knows no
        # progress lines: asked as it understands, within --timeout as it used to be.
        response = client.request(build_request(args.command, args.names))
    if response.get("ok") is not True:
        raise _Failure(str(response.get("error") or "the supervisor refused the request"))
    results = response.get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise _Failure("the supervisor's answer has no list of results")
    ok = bool(results) and all(_result_ok(r) for r in results)
    if args.json:
        shown = {"ok": ok, "results": [_json_result(r) for r in results]}
        out.write(json.dumps(shown, indent=2, ensure_ascii=False) + "\n")
    else:
        for result in results:
            out.write(_result_line(result) + "\n")
    return EXIT_OK if ok else EXIT_FAILURE


def _names(value: object) -> str:
    if not isinstance(value, list) or not value:
        return "none"
    return ", ".join(str(v) for v in value)


def _name_list(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _cmd_metrics(client: Client, out: TextIO) -> int:
    text = _ask(client, build_request("metrics")).get("metrics")
    if not isinstance(text, str):
        raise _Failure("the supervisor's answer has no metrics text")
    out.write(text if text.endswith("\n") or not text else text + "\n")
    return EXIT_OK


def _cmd_events(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Subscribe, then print each event (of the named processes) until Ctrl-C or hang-up."""
    from ..protocol import parse_event

    wanted: set[str] = set()
    names = [process_name(n) for n in args.names]
    if names and "all" not in names:
        # Names are checked against the fleet now (a typo is an error, not silence).
        # 'supervisor' names the supervisor's own events.
        check = [n for n in names if n != "supervisor"]
        if check:
            try:
                filter_status(_status_object(_ask(client, build_request("status"))), check)
            except UnknownNameError as exc:
                raise _Failure(str(exc)) from None
        wanted = set(names)
    _ask(client, build_request("events"))
    color = not args.json and use_color(out, os.environ)
    while True:
        line = client.read_stream_line()
        if line is None:
            raise _Failure("the supervisor closed the events stream (it stopped or restarted)")
        try:
            event = parse_event(line)
        except ProtocolError as exc:
            raise _Failure(exc.message) from None
        if wanted and process_name(str(event.get("name", ""))) not in wanted:
            continue
        if args.json:
            out.write(json.dumps(event, ensure_ascii=False) + "\n")
        else:
            out.write(format_event(event, color=color) + "\n")
        out.flush()


def _cmd_complete_names(args: argparse.Namespace, out: TextIO) -> int:
    """The names to complete after ``for_command``: quiet and quick, nothing on any failure."""
    extra = NAME_COMMANDS.get(args.for_command)
    if extra is None:
        return EXIT_OK
    try:
        client = Client(args.socket or _default_socket(os.environ, args.workdir), COMPLETE_TIMEOUT)
        with client:
            status = _status_object(_ask(client, build_request("status")))
    except (ControlError, _Failure):
        return EXIT_OK
    names = [b["channel"] for b in status.get("bots") or [] if isinstance(b.get("channel"), str)]
    if not isinstance(status.get("hub"), dict):
        extra = tuple(x for x in extra if x != "hub")
    out.write("".join(f"{name}\n" for name in (*names, *extra)))
    return EXIT_OK


def _cmd_reload(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    changes = _ask(client, build_request("reload")).get("changes")
    if not isinstance(changes, dict):
        raise _Failure("the supervisor's answer has no changes")
    if args.json:
        shown = {key: _name_list(changes.get(key)) for key in ("added", "removed", "changed")}
        out.write(json.dumps({"ok": True, "changes": shown}, indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK
    out.write(
        f"reloaded: added {_names(changes.get('added'))}; "
        f"removed {_names(changes.get('removed'))}; "
        f"changed {_names(changes.get('changed'))}\n"
    )
    return EXIT_OK


def _cmd_logs(args: argparse.Namespace, out: TextIO) -> int:
    """The logs of the names given (or all), as the supervisor says where they are;
    without it, the files under --workdir, else the journal when systemd runs."""
    from .fleetlogs import Sources, open_logs, prefixer, show
    from .logs import LogError

    def emit(lines: Sequence[str]) -> None:
        out.write("".join(line + "\n" for line in lines))
        out.flush()

    status: dict[str, Any] | None = None
    down = None
    if not args.journal_dir:
        try:
            with _client(args) as client:
                status = _status_object(_ask(client, build_request("status")))
        except (ControlError, _Failure) as exc:  # not there, or not answering: do without it
            down = exc.message
    sources = Sources(status, args.workdir, args.journal_dir, _systemd_is_init(), down)
    # -n: 10 lines, or every line since --since or that --grep finds.
    count = (
        args.lines if "lines" in args else None if args.since or args.grep else DEFAULT_LOG_LINES
    )
    try:
        logs = open_logs(args.names, sources)
        try:
            several = len(logs) > 1 or ALL in (process_name(n) for n in args.names)
            prefix = prefixer([n for n, _ in logs], use_color(out, os.environ))
            show(
                logs,
                count=count,
                since=args.since,
                match=args.grep,
                follow=args.follow,
                emit=emit,
                prefix=prefix if several else None,
                # What the processes printed is theirs: on a terminal, an escape
                # sequence in it could clear the screen, retitle the window or fake
                # lines. Piped, the bytes are kept for the tools that read them.
                clean=clean if out.isatty() else None,
            )
        finally:
            for _name, log in logs:
                log.close()
    except LogError as exc:
        raise _Failure(exc.message, exc.code) from None
    return EXIT_OK


def _cmd_top(args: argparse.Namespace, out: TextIO) -> int:
    from .top import run_top

    def size() -> tuple[int, int]:
        try:  # asked at each frame: a resized window is drawn at its new size
            lines = os.get_terminal_size(out.fileno()).lines or 24
        except (AttributeError, OSError, ValueError):
            lines = 24
        return _terminal_width(out, os.environ), lines

    keys = sys.stdin.fileno() if sys.stdin.isatty() else None
    color = use_color(out, os.environ)
    return run_top(
        lambda: _client(args),
        interval=args.interval,
        sort=args.sort,
        out=out,
        keys_fd=keys,
        color=color,
        size=size,
    )


def _client(args: argparse.Namespace) -> Client:
    socket_path = args.socket or _default_socket(os.environ, args.workdir)
    return Client(socket_path, args.timeout or DEFAULT_TIMEOUT)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "logs":
        return _cmd_logs(args, out)
    if args.command == COMPLETE_NAMES:
        return _cmd_complete_names(args, out)
    if args.command == "completion":
        from .completion import completion_script

        out.write(completion_script(args.shell_name, build_parser()))
        return EXIT_OK
    if args.command == "top":
        return _cmd_top(args, out)
    if args.command == "shell":
        from .shell import run_shell

        socket_path = args.socket or _default_socket(os.environ, args.workdir)
        return run_shell(socket_path, args.timeout, args.supervisor_pid)
    client = _client(args)
    try:
        client.connect()
    except ConnectError as exc:
        if args.command == "status" and exc.absent:
            return _cmd_status_offline(args, out, exc)
        raise
    with client:
        if args.command == "status":
            return _cmd_status(client, args, out)
        if args.command == "reload":
            return _cmd_reload(client, args, out)
        if args.command == "metrics":
            return _cmd_metrics(client, out)
        if args.command == "events":
            return _cmd_events(client, args, out)
        return _cmd_named(client, args, out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run kissbotctl with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    for stream in (sys.stdout, sys.stderr):
        fit_stream(stream)  # a terminal that is not UTF-8 gets ASCII, not a traceback
    parser = _complete_names_parser() if COMPLETE_NAMES in argv else build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse printed them
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _run(args, sys.stdout)
    except ControlError as exc:
        message, code = exc.message, EXIT_FAILURE
    except _Failure as exc:
        message, code = exc.message, exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Reader went away (kissbotctl status | head): quietly stop writing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    sys.stderr.write(f"{PROG}: {' '.join(message.split())}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
