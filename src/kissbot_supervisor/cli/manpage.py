"""Man pages generated from the command lines themselves (``python -m ... kissbotctl|supervisor``).

``kissbot-supervisor(8)`` comes from the daemon's argparse parser, whose setting
flags come from the declarations in :mod:`..config.settings`, plus the table of
settings; ``kissbotctl(1)`` from kissbotctl's parser and its subcommands. So a
man page says what ``--help`` says, and cannot drift from it. The Debian
package builds them at build time (``packaging/debian/rules``).
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..config.settings import declarations, describe_default

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


def roff(text: str) -> str:
    """Text safe in a roff body line: backslashes and hyphens escaped, no control line."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    if out.startswith((".", "'")):
        out = "\\&" + out
    return out


def _option_lines(actions: Iterable[argparse.Action]) -> list[str]:
    lines: list[str] = []
    for action in actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            names = ", ".join(f"\\fB{roff(o)}\\fR" for o in action.option_strings)
            if action.nargs != 0:
                metavar = action.metavar or action.dest.upper()
                names += f" \\fI{roff(str(metavar))}\\fR"
        else:
            names = f"\\fI{roff(str(action.metavar or action.dest))}\\fR"
        help_text = (action.help or "") % {"default": action.default, "prog": ""}
        lines += [".TP", names, roff(help_text)]
    return lines


def _header(name: str, section: int, summary: str) -> list[str]:
    return [
        f'.TH {name.upper()} {section} "" "{name} {__version__}" '
        f'"{"System Administration" if section == 8 else "User Commands"}"',
        ".SH NAME",
        f"{roff(name)} \\- {roff(summary)}",
    ]


def supervisor_page() -> str:
    from .supervisor import (
        EXPORT_UNITS,
        EXPORT_UNITS_HELP,
        STOP_LEFTOVERS,
        STOP_LEFTOVERS_HELP,
        build_parser,
    )

    parser = build_parser()
    lines = _header("kissbot-supervisor", 8, "supervise a KissBot Twitch bot fleet")
    lines += [
        ".SH SYNOPSIS",
        ".B kissbot\\-supervisor",
        "[\\fIOPTIONS\\fR]",
        ".br",
        ".B kissbot\\-supervisor export\\-units",
        "\\fIDIR\\fR [\\fIOPTIONS\\fR]",
        ".br",
        ".B kissbot\\-supervisor stop\\-leftovers",
        ".SH DESCRIPTION",
        roff(parser.description or ""),
        "Channels come from KissBot's config file. It restarts what fails with a backoff, "
        "parks what keeps failing, and answers \\fBkissbotctl\\fR(1) on its control socket.",
        ".SH COMMANDS",
        ".TP",
        f"\\fB{roff(EXPORT_UNITS)}\\fR \\fIDIR\\fR [\\fIOPTIONS\\fR]",
        roff(EXPORT_UNITS_HELP[0].upper() + EXPORT_UNITS_HELP[1:] + "."),
        ".TP",
        f"\\fB{roff(STOP_LEFTOVERS)}\\fR",
        roff(STOP_LEFTOVERS_HELP[0].upper() + STOP_LEFTOVERS_HELP[1:] + "."),
        ".SH OPTIONS",
    ]
    for group in parser._action_groups:
        actions = list(group._group_actions)
        if not actions:
            continue
        if group.title and group.title not in ("options", "optional arguments"):
            lines += [".SS", roff(group.title.capitalize())]
        lines += _option_lines(actions)
    lines += [
        ".SH SETTINGS",
        "Each setting lives under \\fBsupervisor:\\fR in the settings file, "
        "\\fI/etc/kissbot\\-supervisor/supervisor.yaml\\fR (or \\fB\\-\\-settings\\fR), which "
        "root alone may write; flags win over the file, the file over the defaults.",
    ]
    for _name, default, meta in declarations():
        lines += [
            ".TP",
            f"\\fB{roff(meta.key)}\\fR ({roff(meta.kind)}; default "
            f"\\fB{roff(describe_default(default))}\\fR)",
            roff(meta.help.replace("`", "")),
        ]
    lines += [
        ".SH FILES",
        ".TP",
        "\\fI/etc/kissbot\\-supervisor/supervisor.yaml\\fR",
        "The settings file (a \\fBsupervisor:\\fR section).",
        ".TP",
        "\\fIWORKDIR/config/config.yaml\\fR",
        "KissBot's config: the channels, the bot account, the tokens in YAML mode.",
        ".TP",
        "\\fI/run/kissbot\\-supervisor/control.sock\\fR",
        "The control socket (root, the supervisor's user, the operators' group).",
        ".SH SIGNALS",
        "SIGTERM and SIGINT stop the fleet (bots first, then the hub) and exit; a second one "
        "kills what is left. While the interactive prompt runs, SIGINT (the terminal's "
        "Ctrl\\-C) is the prompt's: it clears the line or ends the running command, and "
        "\\fBquit\\fR stops the fleet. SIGHUP re\\-reads the config; a broken one changes nothing.",
        ".SH EXIT STATUS",
        "0 after a clean stop; 1 on an error while running; 2 for a config that cannot "
        "be used (the message names the file, the key and what was expected). "
        "With \\fB\\-\\-check\\-config\\fR: 0 when everything would start, 1 when "
        "something would fail here (a missing program or script, a directory the bots "
        "cannot write, a token that blocks a start: one line each on stderr), 2 for a "
        "config that cannot be used.",
        ".SH SEE ALSO",
        "\\fBkissbotctl\\fR(1), \\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1)",
    ]
    return "\n".join(lines) + "\n"


def ctl_page() -> str:
    from .ctl import build_parser

    parser = build_parser()
    lines = _header("kissbotctl", 1, "control a running kissbot-supervisor")
    lines += [
        ".SH SYNOPSIS",
        ".B kissbotctl",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        roff(parser.description or ""),
        ".SH OPTIONS",
        *_option_lines(parser._actions),
        ".SH COMMANDS",
    ]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    global_options = {o for a in parser._actions for o in a.option_strings}
    for name, cmd in sub.choices.items():
        if cmd.description is None:
            continue  # hidden
        own = [  # the global options are described once, above
            a
            for a in cmd._actions
            if a.help != argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction)
            and not set(a.option_strings) & global_options
        ]
        usage = " ".join(
            f"[{a.option_strings[-1]}]" if a.option_strings else str(a.metavar or a.dest)
            for a in own
        )
        lines += [".SS", f"\\fB{roff(name)}\\fR {roff(usage)}".rstrip(), roff(cmd.description)]
        lines += _option_lines(own)
    lines += [
        ".SH EXIT STATUS",
        roff(parser.epilog or ""),
        ".SH SEE ALSO",
        "\\fBkissbot\\-supervisor\\fR(8)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    pages = {"kissbotctl": ctl_page, "kissbot-supervisor": supervisor_page}
    if len(args) != 1 or args[0] not in pages:
        print(f"usage: python -m {__spec__.name} {'|'.join(pages)}", file=sys.stderr)
        return 2
    sys.stdout.write(pages[args[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
