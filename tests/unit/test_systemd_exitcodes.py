"""systemd's own exit statuses in words (backends/systemd/exitcodes.py)."""

from __future__ import annotations

from kissbot_supervisor.backends.systemd.exitcodes import SETUP_FAILURES, setup_failure


def test_setup_failures_are_said_as_what_systemd_could_not_do() -> None:
    assert setup_failure(203) == (
        "203/EXEC: the unit was not set up, systemd could not execute the program "
        "(missing, not executable, or a bad #! line)"
    )
    said = setup_failure(243) or ""
    assert said.startswith("243/CREDENTIALS: the unit was not set up")
    assert "226/NAMESPACE" in (setup_failure(226) or "")


def test_a_programs_own_status_is_left_alone() -> None:
    for status in (0, 1, 2, 127, 199, 255):
        assert setup_failure(status) is None
    assert all(200 <= status < 256 for status in SETUP_FAILURES)
