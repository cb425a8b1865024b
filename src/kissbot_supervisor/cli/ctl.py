"""``kissbotctl``: ask a running kissbot-supervisor for its status, start, stop, restart, reload.

Exit codes:

* ``status``: 0 when every wanted process (of those shown) runs, 3 otherwise;
* ``start``/``stop``/``restart``: 0 when every name succeeded, else 1;
* 1 when the supervisor cannot be reached or answers with an error;
* 2 for a usage error.

Errors are one line on stderr, ``kissbotctl: ...``. This program starts in a
few tens of milliseconds: it imports only the standard library's ``argparse``,
``json``, ``os``, ``socket`` and ``sys`` (plus what they need) and our own
import-light :mod:`..paths`, :mod:`..protocol`, :mod:`..client` and
:mod:`..render`. Keep it that way: no yaml, psutil or asyncio here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import __version__
from ..client import DEFAULT_TIMEOUT, Client, ControlError
from ..paths import CONTROL_SOCKET_ENV, SYSTEM_RUNTIME_DIR, default_control_socket
from ..protocol import (
    EXIT_OK,
    ProtocolError,
    UnknownNameError,
    build_request,
    exit_code_for_status,
    filter_status,
)
from ..render import render_status, use_color

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: start-up cost
    from collections.abc import Mapping, Sequence
    from typing import Any, TextIO

__all__ = ["SUCCESS_RESULTS", "main"]

PROG = "kissbotctl"
EXIT_FAILURE = 1
EXIT_USAGE = 2
# Per-name results that count as success: the wanted end state holds, whether
# this request brought it about or it already did.
SUCCESS_RESULTS = frozenset({"started", "stopped", "restarted", "already running", "not running"})


class _Failure(Exception):
    """Ends the command with one line on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --- arguments --------------------------------------------------------------


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
        help=f"control socket (default: ${CONTROL_SOCKET_ENV}, else RUNTIME_DIR/control.sock)",
    )
    parser.add_argument(
        "--timeout",
        metavar="SEC",
        type=_seconds,
        default=default,
        help=f"give up on an answer after SEC seconds (default: {DEFAULT_TIMEOUT:g})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Control a running kissbot-supervisor over its control socket.",
        epilog="NAME is a channel login, 'hub' or 'all'. "
        "Exit status: 0 ok; 1 error or unreachable supervisor; 2 usage; "
        "3 (status) a wanted process is not running.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, description: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=description, description=description)
        _add_global_options(cmd, suppress=True)
        return cmd

    status = add(
        "status", "Show the supervisor, the hub and the bots (exit 3 if a wanted one is down)."
    )
    status.add_argument("names", nargs="*", metavar="NAME", help="show only these (default: all)")
    status.add_argument("--json", action="store_true", help="print the status object as JSON")
    for name, verb in (("start", "Start"), ("stop", "Stop"), ("restart", "Restart")):
        cmd = add(name, f"{verb} bots or the hub.")
        cmd.add_argument("names", nargs="+", metavar="NAME", help="channel login, 'hub' or 'all'")
    add("reload", "Re-read the config file and apply the changes (bots added, removed, changed).")
    return parser


def _default_socket(env: Mapping[str, str]) -> str:
    """The socket when --socket is not given.

    A user other than root gets a path under their own runtime directory, but
    a system supervisor (run by systemd as root) listens under /run. When the
    user's path does not exist and the system one does, use the system one.
    """
    explicit = env.get(CONTROL_SOCKET_ENV)
    if explicit:
        return explicit
    primary = default_control_socket(env)
    system = SYSTEM_RUNTIME_DIR / primary.name
    if primary != system and not _exists(str(primary)) and _exists(str(system)):
        return str(system)
    return str(primary)


def _exists(path: str) -> bool:
    try:
        os.lstat(path)
    except PermissionError:
        return True  # there, but ours to be refused when we connect
    except OSError:
        return False
    return True


def _terminal_width(stream: TextIO, env: Mapping[str, str]) -> int:
    columns = env.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(stream.fileno()).columns
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
    status = _status_object(_ask(client, build_request("status")))
    try:
        shown = filter_status(status, args.names)
    except UnknownNameError as exc:
        raise _Failure(str(exc)) from None
    if args.json:
        out.write(json.dumps(shown, indent=2, ensure_ascii=False) + "\n")
    else:
        env = os.environ
        out.write(render_status(shown, color=use_color(out, env), width=_terminal_width(out, env)))
    return exit_code_for_status(shown)


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


def _cmd_named(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    try:
        request = build_request(args.command, args.names)
    except ProtocolError as exc:
        raise _Failure(exc.message, EXIT_USAGE) from None
    results = _ask(client, request).get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise _Failure("the supervisor's answer has no list of results")
    for result in results:
        out.write(_result_line(result) + "\n")
    return EXIT_OK if results and all(_result_ok(r) for r in results) else EXIT_FAILURE


def _names(value: object) -> str:
    if not isinstance(value, list) or not value:
        return "none"
    return ", ".join(str(v) for v in value)


def _cmd_reload(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    changes = _ask(client, build_request("reload")).get("changes")
    if not isinstance(changes, dict):
        raise _Failure("the supervisor's answer has no changes")
    out.write(
        f"reloaded: added {_names(changes.get('added'))}; "
        f"removed {_names(changes.get('removed'))}; "
        f"changed {_names(changes.get('changed'))}\n"
    )
    return EXIT_OK


def _run(args: argparse.Namespace, out: TextIO) -> int:
    socket_path = args.socket or _default_socket(os.environ)
    timeout = args.timeout or DEFAULT_TIMEOUT
    with Client(socket_path, timeout) as client:
        if args.command == "status":
            return _cmd_status(client, args, out)
        if args.command == "reload":
            return _cmd_reload(client, args, out)
        return _cmd_named(client, args, out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run kissbotctl with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse printed them
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _run(args, sys.stdout)
    except ControlError as exc:
        message, code = exc.message, EXIT_FAILURE
    except _Failure as exc:
        message, code = exc.message, exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Reader went away (kissbotctl status | head): quietly stop writing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    sys.stderr.write(f"{PROG}: {' '.join(message.split())}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
