"""``kissbot-supervisor``: the daemon's command line.

Accepts every flag of KissBot's old supervisor (``--config --use-db --db
--enable-hub --hub-socket --non-interactive``), plus one flag per setting,
derived from the declarations in :mod:`..settings`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import __version__
from ..config.load import setting_flags
from ..config.paths import SETTINGS_FILE

# typing is imported for the type checker only (it costs the daemon 0.4 MiB).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns or 80  # 0: an unsized pty
    except (OSError, ValueError):
        return 80


def _formatter(prog: str) -> argparse.HelpFormatter:
    # With an explicit width argparse does not import shutil, which would pull
    # bz2 and lzma into the resident daemon: about 1 MiB for nothing.
    return argparse.HelpFormatter(prog, width=_terminal_width() - 2)


def _metavar(kind: str) -> str:
    if kind.startswith("one of: "):
        return "{" + kind.removeprefix("one of: ").replace(" ", "") + "}"
    return kind.upper().replace(" ", "_")


PROG = "kissbot-supervisor"
EXPORT_UNITS = "export-units"
# The one description of the subcommand: --help, its own --help and the man page.
EXPORT_UNITS_HELP = (
    "write the same fleet as static systemd unit files (kissbot.slice, "
    "kissbot-hub.service, the template kissbot-bot@.service, kissbot.target) into DIR, "
    "for running without a resident supervisor, and exit"
)


STOP_LEFTOVERS = "stop-leftovers"
STOP_LEFTOVERS_HELP = (
    "run by the systemd unit's ExecStopPost=: when the unit is being stopped (not "
    "restarted) and the supervisor died before it had stopped the whole fleet, stop the "
    "hub's and the bots' units that are left, and wait for them"
)
STOP_LEFTOVERS_WAIT_SEC = 240.0  # below the unit's TimeoutStopSec=5min


def stop_leftovers_main() -> int:
    from ..backends.systemd.backend import system_bus_address
    from ..backends.systemd.bus import BusError
    from ..backends.systemd.leftovers import LeftoversError, stop_leftovers
    from ..backends.systemd.messages import SystemdError

    try:
        print(
            f"{PROG} {STOP_LEFTOVERS}: "
            + stop_leftovers(system_bus_address(), STOP_LEFTOVERS_WAIT_SEC)
        )
    except (BusError, SystemdError, LeftoversError) as e:
        print(f"{PROG} {STOP_LEFTOVERS}: the fleet may still run: {e}", file=sys.stderr)
        return 1
    return 0


def build_parser(export: bool = False) -> argparse.ArgumentParser:
    """The daemon's command line; ``export``: that of ``kissbot-supervisor export-units``."""
    if export:
        parser = argparse.ArgumentParser(
            formatter_class=_formatter,
            prog=f"{PROG} {EXPORT_UNITS}",
            usage="%(prog)s DIR [OPTIONS]",
            description=EXPORT_UNITS_HELP[0].upper() + EXPORT_UNITS_HELP[1:] + ".",
            epilog="The options are the supervisor's: the units run the fleet as it would. "
            "Static units or the supervisor's, never both: see 'In production, under "
            "systemd' in docs/operations.md.",
        )
        parser.add_argument("dir", metavar="DIR", help="where to write the unit files")
    else:
        parser = argparse.ArgumentParser(
            formatter_class=_formatter,
            prog=PROG,
            usage=f"%(prog)s [OPTIONS]\n       %(prog)s {EXPORT_UNITS} DIR [OPTIONS]"
            f"\n       %(prog)s {STOP_LEFTOVERS}",
            description="Supervise a KissBot fleet: the EventSub hub first, then one bot per "
            f"channel. '{EXPORT_UNITS} DIR': {EXPORT_UNITS_HELP} ({EXPORT_UNITS} --help). "
            f"'{STOP_LEFTOVERS}': {STOP_LEFTOVERS_HELP}.",
            epilog="Every setting can also live under 'supervisor:' in the settings file; "
            "flags win. See docs/configuration.md and docs/security.md.",
        )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        default="config/config.yaml",
        metavar="PATH",
        help="KissBot config file, relative to the workdir (default: %(default)s)",
    )
    parser.add_argument(
        "--settings",
        default=None,
        metavar="PATH",
        help=f"the supervisor's settings: a YAML file with a 'supervisor:' section, writable "
        f"by root (or this user) only (default: {SETTINGS_FILE} when it exists; else the "
        "'supervisor:' section of the KissBot config, if only root or this user can write it)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        metavar="DIR",
        help="the KissBot root: working directory of the bots and base of relative paths "
        "(default: the current directory)",
    )
    parser.add_argument(
        "--non-interactive",
        action="store_true",
        help="no prompt on the terminal (without it, a foreground supervisor on a terminal "
        "offers kissbotctl's shell in a separate process; the supervisor never reads stdin)",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="check the config file, the token source and what a start needs here (the "
        "programs, the directories the bots write, the tokens), print the fleet, and exit: "
        "0 when everything would start, 1 when something would fail (said on stderr), 2 "
        "for a config that cannot be used",
    )
    group = parser.add_argument_group("settings (see docs/configuration.md)")
    for dest, flags, boolean, kind, help_text in setting_flags():
        if boolean:
            group.add_argument(
                *flags, dest=dest, action="store_const", const=True, default=None, help=help_text
            )
        else:
            group.add_argument(
                *flags,
                dest=dest,
                default=None,
                metavar=_metavar(kind),
                help=help_text,
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    export_dir = None
    if argv[:1] == [STOP_LEFTOVERS]:
        return stop_leftovers_main()
    if argv[:1] == [EXPORT_UNITS]:
        # `kissbot-supervisor export-units DIR [flags]`: the same config, as static units.
        args = build_parser(export=True).parse_args(argv[1:])
        export_dir = Path(args.dir)
    else:
        args = build_parser().parse_args(argv)
    flags: dict[str, Any] = {
        dest: getattr(args, dest) for dest, *_ in setting_flags() if getattr(args, dest) is not None
    }
    from ..daemon.launch import LaunchOptions, StartupError
    from ..daemon.startup import make_supervisor

    workdir = Path(args.workdir) if args.workdir else Path.cwd()
    if not workdir.is_dir():
        print(f"kissbot-supervisor: --workdir {workdir} is not a directory", file=sys.stderr)
        return 2
    launch = LaunchOptions(
        workdir=workdir.resolve(),
        config_path=args.config,
        flags=flags,
        interactive=not args.non_interactive and sys.stdin.isatty(),
        settings_file=Path(args.settings).absolute() if args.settings else SETTINGS_FILE,
        settings_optional=not args.settings,
    )
    try:
        if args.check_config:
            from ..daemon.startup import check_config

            text, problems = check_config(launch)
            print(text)
            for problem in problems:
                print(f"kissbot-supervisor: would fail: {problem}", file=sys.stderr)
            return 1 if problems else 0
        if export_dir is not None:
            from ..daemon.startup import export_static_units

            for path in export_static_units(launch, export_dir):
                print(path)
            return 0
        supervisor = make_supervisor(launch)
    except StartupError as e:
        print(f"kissbot-supervisor: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"kissbot-supervisor: {e}", file=sys.stderr)
        return 1
    pid = start_prompt(supervisor.control_path) if launch.interactive else None
    prompt = Prompt(pid, supervisor.helpers) if pid is not None else None
    if prompt is not None:
        supervisor.helpers.add(prompt.pid)  # ours: not an orphan to end (runtime/reaper.py)
        supervisor.prompt_alive = prompt.alive
    try:
        return supervisor.run()
    finally:
        if prompt is not None:
            prompt.end()


# --- the interactive prompt ---------------------------------------------------
#
# The old supervisor read commands from stdin in its own loop, and supervision
# stopped while it waited (fault 4). Here the prompt is a child process,
# `kissbotctl shell` on this terminal, talking to the control socket like any
# kissbotctl; the daemon never reads stdin. The child stays in the daemon's
# process group (the operator's shell, and make, wait for that job), so the
# terminal's Ctrl-C reaches the daemon too: while the prompt lives, the daemon
# leaves that SIGINT to it (it ends the running command or clears the line, as
# in any shell), and stopping the fleet is the prompt's explicit `quit`, which
# sends SIGTERM here. Without a prompt (no terminal, --non-interactive, the
# prompt gone) SIGINT stops the fleet as before. The prompt dies with the daemon
# (PR_SET_PDEATHSIG, set by itself), and is ended and reaped before the daemon
# exits so that it restores the terminal before the operator's shell takes the
# terminal back.
PROMPT_CODE = "import sys; from kissbot_supervisor.cli.ctl import main; sys.exit(main())"
PROMPT_END_WAIT = 5.0  # seconds; readline restores the terminal in far less


def start_prompt(control: Path) -> int | None:
    """Spawn the prompt on this terminal; its PID, or None when there should be none.

    A job started in the background (``&``) gets no prompt: reading the
    terminal would stop it (SIGTTIN).
    """
    try:
        if os.tcgetpgrp(sys.stdin.fileno()) != os.getpgrp():
            return None
        argv = [sys.executable, "-c", PROMPT_CODE, "shell", "--socket", str(control)]
        argv += ["--supervisor-pid", str(os.getpid())]
        return os.posix_spawn(sys.executable, argv, os.environ)
    except OSError as e:
        print(f"kissbot-supervisor: no interactive prompt: {e.strerror or e}", file=sys.stderr)
        return None


class Prompt:
    """The prompt child, reaped here once it has ended (then never signalled: its PID
    may belong to another process by then)."""

    def __init__(self, pid: int, helpers: set[int]) -> None:
        self.pid = pid
        self._helpers = helpers
        self._reaped = False

    def alive(self) -> bool:
        """Whether it still runs; one that has ended is reaped (no zombie) and forgotten."""
        if not self._reaped:
            try:
                self._reaped = os.waitpid(self.pid, os.WNOHANG) != (0, 0)
            except ChildProcessError:
                self._reaped = True
            if self._reaped:
                self._helpers.discard(self.pid)
        return not self._reaped

    def end(self) -> None:
        """SIGTERM it (it leaves through readline's clean-up) and reap it."""
        import signal
        import time

        if not self.alive():
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + PROMPT_END_WAIT
            while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:  # stuck (stopped?): the terminal may need `reset`
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                    break
                time.sleep(0.02)
        except (ProcessLookupError, ChildProcessError):
            pass  # already gone and reaped
        self._reaped = True


if __name__ == "__main__":
    sys.exit(main())
