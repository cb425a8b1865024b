"""Tests against a real systemd system manager booted in a namespace (see sandbox.py).

This package is named ``systemd`` and pytest puts ``tests/`` first on sys.path
(``pythonpath = ["tests"]``), so ``import systemd`` anywhere in a pytest run finds
THIS package, not systemd-python's. systemd-python's ``systemd/__init__.py`` is
empty, so appending its directory to this package's ``__path__`` makes
``systemd.journal``, ``systemd.daemon`` etc. resolve to the real modules again.
Renaming this package (e.g. to ``tests/systemd_sandbox``) would remove the need.
"""

import importlib.machinery
import sys
from pathlib import Path

_TESTS_DIR = Path(__file__).resolve().parent.parent
_spec = importlib.machinery.PathFinder.find_spec(
    "systemd", [p for p in sys.path if Path(p or ".").resolve() != _TESTS_DIR]
)
if _spec is not None and _spec.submodule_search_locations:
    __path__.extend([p for p in _spec.submodule_search_locations if p not in __path__])
