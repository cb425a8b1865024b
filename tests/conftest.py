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
import signal

from hypothesis import settings

# A run started in the background by a non-interactive shell (`make test &`, a CI
# runner's script) inherits SIGINT ignored, as POSIX has it, and so would every
# program the tests start: the tests that press Ctrl-C on kissbotctl would fail
# for that alone. A caught signal is reset to its default at exec; an ignored one
# stays ignored: catch it here, as an interactive shell gives it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

settings.register_profile("default", deadline=None)
settings.register_profile(
    "ci", deadline=None, max_examples=1000, derandomize=True, database=None, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
