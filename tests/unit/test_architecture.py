"""The tree shows the architecture, and imports point one way (docs/design.md).

Every import of ours is read from the source (lazy ones and those for the type
checker included) and held to the layers: a module imports its own layer or a
lower one, never a higher one and never a neighbour of the same rank.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "kissbot_supervisor"

# Lower ranks are imported by higher ones, never the other way round.
RANKS = {
    "kissbot.names": -1,  # KissBot's names and rules, which every layer needs (imports re only)
    "protocol": 0,  # the control protocol and EVENT kinds: pure
    "notify": 0,  # for the bots: imports nothing of ours
    "__init__": 0,  # the version
    "status": 1,  # the STATUS object: its keys, types, builders and readers (pure)
    "core": 1,  # the state machine: decides, does no I/O
    "runtime": 2,  # the loop, inotify, files in others' directories, /proc, the log
    "config": 3,  # settings, the config file, specs
    "kissbot": 4,  # KissBot's files in pids/
    "tokens": 4,  # token states, the DB, the gate
    "backends": 5,  # carry out the core's actions
    "observe": 6,  # events, metrics, hooks
    "daemon": 7,  # wires everything
    "cli": 8,  # the programs' command lines, kissbotctl
}


def layer_of(module: str) -> str:
    """``kissbot_supervisor.backends.native.spawner`` -> ``backends``; a module
    ranked on its own (``kissbot.names``) is its own layer."""
    parts = module.split(".")
    if ".".join(parts[1:3]) in RANKS:
        return ".".join(parts[1:3])
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of our modules (or packages) that ``path`` imports."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.startswith("kissbot_supervisor"):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if _is_ours(sub) else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kissbot_supervisor")}
    return found


def _is_ours(module: str) -> bool:
    path = SRC / module.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


MODULES = sorted(PACKAGE.rglob("*.py"))
DEMO = "kissbot_supervisor.demo"


def test_every_module_is_in_a_known_layer() -> None:
    unknown = {
        layer_of(module_name(p)) for p in MODULES if not module_name(p).startswith(DEMO)
    } - set(RANKS)
    assert not unknown, f"add these to RANKS, with their rank: {sorted(unknown)}"


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_imports_point_down(path: Path) -> None:
    here = module_name(path)
    wrong = []
    for target in sorted(imports_of(path)):
        if here.startswith(DEMO):
            # The demo programs stand in for KissBot's: they use only what a bot may.
            if not (target.startswith(DEMO) or target == "kissbot_supervisor.notify"):
                wrong.append(f"{target} (a demo program imports only notify)")
            continue
        mine, theirs = layer_of(here), layer_of(target)
        if target.startswith(DEMO):
            wrong.append(f"{target} (the demo is not part of the supervisor)")
        elif mine != theirs and RANKS[theirs] >= RANKS[mine]:
            wrong.append(f"{target} ({theirs}, rank {RANKS[theirs]}, is not below {mine})")
    assert not wrong, f"{here} imports " + "; ".join(wrong)


def test_the_check_sees_lazy_and_type_checking_imports() -> None:
    """The rule is only as good as the import reader: it must see every form."""
    daemon = imports_of(PACKAGE / "daemon" / "supervisor.py")
    assert "kissbot_supervisor.backends.systemd.backend" in daemon  # lazy, in a method
    assert "kissbot_supervisor.backends.native.backend" in daemon  # lazy and TYPE_CHECKING
    assert "kissbot_supervisor.core" in daemon  # from .. import core
