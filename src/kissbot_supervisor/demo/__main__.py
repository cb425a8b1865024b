"""``python -m kissbot_supervisor.demo {bot,hub} ...``: run one demo program.

argparse defines the interface (``--help``, error messages), built from each
program's flag table. A well-formed command line is parsed by
``common.parse_flags`` instead, without importing argparse, and only the
chosen program's module is loaded: both keep a demo bot's memory down.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

    from kissbot_supervisor.demo.common import Flag

PROGRAMS = ("bot", "hub")


def _load(name: str) -> tuple[tuple[Flag, ...], Callable[[dict[str, Any]], int]]:
    # Import only the program that runs.
    if name == "bot":
        from kissbot_supervisor.demo import bot

        return bot.FLAGS, bot.run
    from kissbot_supervisor.demo import hub

    return hub.FLAGS, hub.run


def build_parser() -> argparse.ArgumentParser:
    """The full argparse parser, for help and for command lines the fast path declines."""
    import argparse

    from kissbot_supervisor.demo import common

    parser = argparse.ArgumentParser(
        prog="python -m kissbot_supervisor.demo",
        description="Demo KissBot programs for exercising the supervisor.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{bot,hub}")
    descriptions = {
        "bot": ("a demo bot (stands in for main.py)", "A demo bot: stands in for main.py."),
        "hub": (
            "a demo EventSub hub (stands in for eventsub_hub.py)",
            "A demo EventSub hub: stands in for eventsub_hub.py.",
        ),
    }
    for name in PROGRAMS:
        brief, description = descriptions[name]
        flags, _run = _load(name)
        common.add_flags(commands.add_parser(name, help=brief, description=description), flags)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the program named by the first argument; return its exit status."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in PROGRAMS:
        from kissbot_supervisor.demo import common

        flags, run = _load(args[0])
        values = common.parse_flags(args[1:], flags)
        if values is not None:
            return run(values)
    namespace = vars(build_parser().parse_args(args))
    _flags, run = _load(namespace.pop("command"))
    return run(namespace)


if __name__ == "__main__":
    sys.exit(main())
