"""Hypothesis profiles for the property-based tests (test_*_props.py).

``default`` keeps Hypothesis's example count (100 per test: seconds in all)
and only drops the per-example deadline, which a machine shared with other
jobs would trip for no fault of the code. ``ci`` runs ten times the examples,
derandomised so that a failure in CI replays the same way, and writes no
example database (a fresh CI checkout would throw it away):
``pytest --hypothesis-profile=ci`` or ``HYPOTHESIS_PROFILE=ci``.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("default", deadline=None)
settings.register_profile(
    "ci", deadline=None, max_examples=1000, derandomize=True, database=None, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
