"""What the demo bot and hub share: JSON-lines framing, stderr logging, fault flags, timers.

Runtime imports stay at the standard library modules a bot needs anyway:
hundreds of demo bots must fit on a small machine, and ``typing`` alone would
add most of a MiB to each. Type-only imports sit behind a local TYPE_CHECKING
constant (which mypy honours) for the same reason.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any, NoReturn, TextIO

# Longest JSON line either side accepts; a peer that sends more without a
# newline is broken or hostile, and buffering it forever would grow memory.
MAX_LINE = 64 * 1024


def encode(message: dict[str, object]) -> bytes:
    """One protocol message as a compact JSON line."""
    # Deferred (here and in decode): only a bot that talks to a hub pays for json and re.
    import json

    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> object:
    """One received JSON line; raises ValueError when it is not JSON."""
    import json

    return json.loads(line)


def take_lines(buffer: bytearray) -> list[bytes]:
    """Remove and return the complete lines at the start of ``buffer`` (without newlines)."""
    end = buffer.rfind(b"\n")
    if end < 0:
        return []
    chunk = bytes(buffer[:end])
    del buffer[: end + 1]
    return chunk.split(b"\n")


class Logger:
    """Timestamped lines to stderr and, optionally, to a log file as well."""

    def __init__(self, name: str, file: TextIO | None = None) -> None:
        self._name = name
        self._file = file

    def __call__(self, level: str, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self._name} {level}: {message}\n"
        sys.stderr.write(line)
        sys.stderr.flush()
        if self._file is not None:
            self._file.write(line)
            self._file.flush()


class Flag:
    """One command-line flag, declared once for both parsers (see ``parse_flags``)."""

    __slots__ = (
        "choices",
        "convert",
        "default",
        "group",
        "help_text",
        "metavar",
        "name",
        "required",
    )

    def __init__(
        self,
        name: str,
        help_text: str,
        *,
        group: str,
        convert: Callable[[str], object] | None = str,
        default: object = None,
        metavar: str | None = None,
        choices: tuple[str, ...] | None = None,
        required: bool = False,
    ) -> None:
        """``convert=None`` makes a switch (no value; True when given)."""
        self.name = name
        self.help_text = help_text
        self.group = group
        self.convert = convert
        self.default = False if convert is None else default
        self.metavar = metavar
        self.choices = choices
        self.required = required

    @property
    def dest(self) -> str:
        return self.name[2:].replace("-", "_")


def parse_flags(argv: list[str], flags: tuple[Flag, ...]) -> dict[str, Any] | None:
    """Parse the plain cases of ``argv`` without argparse; None for anything else.

    argparse with its help formatter pulls in gettext, locale and shutil (with
    bz2 and lzma), about 1.2 MiB per process: too much for a fleet of hundreds
    of demo bots, which are always started with well-formed ``--flag value`` and
    ``--flag=value`` arguments. Anything this does not handle (``--help``,
    abbreviations, unknown flags, bad values, values starting with "-") returns
    None, and the caller hands the same argv to argparse, built from the same
    table, for the error message or help text.
    """
    by_name = {flag.name: flag for flag in flags}
    values: dict[str, Any] = {flag.dest: flag.default for flag in flags}
    given: set[str] = set()
    index = 0
    while index < len(argv):
        name, has_value, inline = argv[index].partition("=")
        index += 1
        flag = by_name.get(name)
        if flag is None:
            return None
        given.add(flag.name)
        if flag.convert is None:
            if has_value:
                return None
            values[flag.dest] = True
            continue
        if has_value:
            text = inline
        elif index < len(argv):
            text = argv[index]
            index += 1
        else:
            return None
        if text.startswith("-"):
            return None
        try:
            value = flag.convert(text)
        except ValueError:
            return None
        if flag.choices is not None and value not in flag.choices:
            return None
        values[flag.dest] = value
    if any(flag.required and flag.name not in given for flag in flags):
        return None
    return values


def add_flags(parser: argparse.ArgumentParser, flags: tuple[Flag, ...]) -> None:
    """Declare ``flags`` on an argparse parser, grouped as declared."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag in flags:
        group = groups.get(flag.group)
        if group is None:
            group = groups[flag.group] = parser.add_argument_group(flag.group)
        if flag.convert is None:
            group.add_argument(flag.name, action="store_true", help=flag.help_text)
        else:
            group.add_argument(
                flag.name,
                type=_for_argparse(flag.convert),
                default=flag.default,
                metavar=flag.metavar,
                choices=flag.choices,
                required=flag.required,
                help=flag.help_text,
            )


def _for_argparse(convert: Callable[[str], object]) -> Callable[[str], object]:
    # argparse shows an ArgumentTypeError's own text; a ValueError would
    # become a bare "invalid value".
    import argparse

    def checked(text: str) -> object:
        try:
            return convert(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    checked.__name__ = getattr(convert, "__name__", "value")
    return checked


def seconds(text: str) -> float:
    """A duration in seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"seconds must be a finite number >= 0, got {text!r}")
    return value


FAULTS = "fault injection (tests and benchmarks)"


def fault_flags(subject: str) -> tuple[Flag, ...]:
    """The fault-injection flags the bot and the hub both understand."""
    return (
        Flag(
            "--exit-code",
            f"without --crash-after: exit N at start, before ready (a {subject} whose "
            "credentials are refused); with it: the crash exit status (default 1)",
            group=FAULTS,
            convert=int,
            metavar="N",
        ),
        Flag(
            "--crash-after",
            "exit with --exit-code (default 1) S seconds after becoming ready",
            group=FAULTS,
            convert=seconds,
            metavar="S",
        ),
        Flag(
            "--hang-after",
            "S seconds after becoming ready, stop everything (no pings, no output, "
            "no signal handling: a hung hub needs SIGKILL) while staying alive",
            group=FAULTS,
            convert=seconds,
            metavar="S",
        ),
        Flag(
            "--ignore-sigterm",
            "ignore SIGTERM, so only SIGKILL stops it",
            group=FAULTS,
            convert=None,
        ),
        Flag(
            "--ready-delay",
            "wait S seconds before becoming ready (default 0)",
            group=FAULTS,
            convert=seconds,
            default=0.0,
            metavar="S",
        ),
    )


def hang_forever() -> NoReturn:
    """Stop doing anything at all, the way a deadlocked process does.

    Signals keep their dispositions: SIGTERM still kills unless ignored.
    """
    while True:
        time.sleep(3600)


def earliest(*deadlines: float | None) -> float | None:
    """The soonest of the deadlines that are set."""
    found: float | None = None
    for deadline in deadlines:
        if deadline is not None and (found is None or deadline < found):
            found = deadline
    return found


def select_timeout(deadline: float | None, now: float) -> float | None:
    """A select() timeout that wakes at ``deadline`` (None: wait for I/O only)."""
    if deadline is None:
        return None
    return max(0.0, deadline - now)


def write_text(path: str, text: str) -> None:
    """Create or replace a small file in one write."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def pid_line() -> str:
    return f"{os.getpid()}\n"
