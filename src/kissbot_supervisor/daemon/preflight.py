"""``--check-config`` beyond the config: would a start work here?

A config can be valid in a directory where nothing can start (not the KissBot
checkout: no ``main.py``, no ``eventsub_hub.py``). Without starting anything,
this looks at what a start needs and says what would fail:

* each process's program: ``argv[0]`` found as the backends look for it (a
  path relative to the workdir, else a name in ``PATH``) and, when it is a
  Python interpreter, the script it is given, in the workdir (the processes'
  working directory);
* the directories the bots write (``pids/``, ``logs/``, ``cache/``): writable by
  the user they run as, or creatable by the supervisor;
* the tokens: a process whose token blocks its start (missing, revoked, needs
  re-authorisation) would not be started at all.

Each problem is one sentence: which processes, what would fail, what to do.
Processes that fail alike are said once (60 bots, one missing ``main.py``).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from ..backends.systemd.units import ExecutableNotFound, find_program, resolve_executable
from ..core import HUB, ProcessSpec
from ..kissbot.names import KISSBOT_DIRS
from ..tokens.gate import read_token_states
from ..tokens.states import TokenError, TokenState, blocks_start

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..config.load import Config
    from ..tokens.states import DbTokens

# An interpreter whose first operand is a script to run: python, python3, python3.11.
_PYTHON = re.compile(r"python[0-9.]*")


def _who(names: Sequence[str]) -> str:
    bots = [n for n in names if n != HUB]
    parts = ["the hub"] if HUB in names else []
    if len(bots) == 1:
        parts.append(bots[0])
    elif bots:
        parts.append(f"{len(bots)} bots ({', '.join(bots[:3])}{', ...' if len(bots) > 3 else ''})")
    return " and ".join(parts)


def _script(argv: Sequence[str]) -> str | None:
    """The script a Python interpreter in ``argv`` is told to run, if any."""
    if not _PYTHON.fullmatch(os.path.basename(argv[0])):
        return None
    for arg in argv[1:]:
        if arg in ("-m", "-c", "-"):
            return None  # a module or a command: nothing to look for
        if not arg.startswith("-"):
            return arg
    return None


def program_problems(specs: Sequence[ProcessSpec], workdir: Path) -> list[str]:
    """A missing program or script, once per distinct problem."""
    found: dict[str, list[str]] = {}
    for spec in specs:
        try:
            resolve_executable(spec.argv[0], str(workdir), find_program)
        except ExecutableNotFound as e:
            key = f"{spec.argv[0]!r} {e.rule}"
            found.setdefault(key, []).append(spec.name)
            continue
        script = _script(spec.argv)
        if script is not None and not (workdir / script).is_file():
            key = f"{script} is not in {workdir} (its working directory)"
            found.setdefault(key, []).append(spec.name)
    out = []
    for key, names in found.items():
        settings = [s for s, on in (("hub", HUB in names), ("bot", names != [HUB])) if on]
        where = " or ".join(f"supervisor.{s}.command" for s in settings)
        out.append(
            f"{_who(names)}: {key}, so it would exit at once; is --workdir the KissBot "
            f"checkout? (else set {where})"
        )
    return out


def _writable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether ``uid`` (with groups ``gids``) may create files in directory ``path``."""
    if uid == os.geteuid():
        return os.access(path, os.W_OK | os.X_OK)
    if uid == 0:
        return True
    mode = path.stat()
    if mode.st_uid == uid:
        return mode.st_mode & 0o300 == 0o300
    if mode.st_gid in gids:
        return mode.st_mode & 0o030 == 0o030
    return mode.st_mode & 0o003 == 0o003


def directory_problems(workdir: Path, owner: tuple[int, int] | None) -> list[str]:
    """KissBot's directories the bots could not write; ``owner``: the bots' (UID, GID),
    None when they run as this user."""
    uid, gids = (os.geteuid(), set(os.getgroups())) if owner is None else _ids(*owner)
    who = "this user" if owner is None else f"the bots' user (UID {uid})"
    problems = []
    for name in KISSBOT_DIRS:
        path = workdir / name
        if not path.exists():
            # Made at start-up by the supervisor (for the bots, when they are another user).
            if not os.access(workdir, os.W_OK | os.X_OK):
                problems.append(
                    f"{path}/ is missing and cannot be made: {workdir} is not writable by the "
                    "supervisor; make it, writable by the bots' user"
                )
        elif not path.is_dir():
            problems.append(f"{path} is not a directory; the bots need it as one")
        elif not _writable_by(path, uid, gids):
            problems.append(
                f"{path}/ is not writable by {who}: the bots write there; "
                f"chown or chmod it (ls -ld {path})"
            )
    return problems


def _ids(uid: int, gid: int) -> tuple[int, set[int]]:
    import grp
    import pwd

    gids = {gid}
    try:
        login = pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid, gids
    gids |= {g.gr_gid for g in grp.getgrall() if login in g.gr_mem}
    return uid, gids


def token_problems(cfg: Config, specs: Sequence[ProcessSpec]) -> tuple[list[str], list[str]]:
    """(problems, notes): processes whose token blocks their start; a token source that
    cannot be read now is a note (the supervisor keeps trying)."""
    now = time.time()
    tokens: DbTokens | None
    try:
        tokens = read_token_states(cfg, now)
    except TokenError as e:
        return [], [f"token states cannot be read now ({e}); the supervisor will keep trying"]
    if tokens is None:
        return [], []  # no tokens in the config: KissBot's own files, not ours to judge
    problems, notes = [], []
    for role, report in (("bot", tokens.bot), ("broadcaster", tokens.broadcaster)):
        names = [s.name for s in specs if (s.name == HUB) == (role == "broadcaster")]
        if names and blocks_start(report.state):
            problems.append(f"{_who(names)}: would not be started: {report.reason}")
        elif names and role == "broadcaster" and report.state is TokenState.UNCHECKED:
            notes.append(f"{_who(names)}: token {report.reason}")
    return problems, notes


def preflight(
    cfg: Config, specs: Sequence[ProcessSpec], owner: tuple[int, int] | None
) -> tuple[list[str], list[str]]:
    """(problems, notes) of a start in ``cfg.workdir`` with these processes."""
    problems = program_problems(specs, cfg.workdir)
    problems += directory_problems(cfg.workdir, owner)
    tokens, notes = token_problems(cfg, specs)
    return problems + tokens, notes
