"""Who may use the control socket (daemon/control.Access), against this machine's
group database: Debian's ``users`` (GID 100) stands for the operators' group,
``nogroup`` (65534) for the bots' group."""

from __future__ import annotations

import grp

import pytest

from kissbot_supervisor.daemon.control import Access

OWN = 4242  # the supervisor's own UID in these cases
BOTS_UID = 65534
BOTS_GID = 65534


@pytest.fixture(autouse=True)
def debian_groups() -> None:
    if grp.getgrnam("users").gr_gid != 100 or grp.getgrnam("nogroup").gr_gid != 65534:
        pytest.skip("not Debian's users and nogroup")


def test_root_our_user_and_operators_may_talk() -> None:
    access = Access("users", BOTS_UID, BOTS_GID)
    assert access.refusal(0, 0, OWN) is None
    assert access.refusal(OWN, 1000, OWN) is None
    assert access.refusal(1001, 100, OWN) is None  # an operator (primary group)


def test_the_bots_user_and_group_never_may() -> None:
    access = Access("users", BOTS_UID, BOTS_GID)
    # Even with the operators' group as its primary group, the bots' user is refused.
    assert access.refusal(BOTS_UID, 100, OWN) == (
        "the bots' user or group may not drive the supervisor"
    )
    # Another user whose primary group is the bots' one: a process of the fleet.
    assert access.refusal(1002, BOTS_GID, OWN) is not None
    # A supervisor that runs as the bots' user itself refuses it too (no boundary to keep,
    # and an operator's socket is then the group's).
    assert Access("users", OWN, None).refusal(OWN, 1000, OWN) is not None


def test_others_are_told_which_group_to_join() -> None:
    access = Access("users", BOTS_UID, BOTS_GID)
    assert access.refusal(1003, 1003, OWN) == (
        "you need to be root, the supervisor's user, or in group users"
    )
    missing = Access("no-such-group-kb", None, None)
    assert missing.refusal(1003, 1003, OWN) == (
        "you need to be root, the supervisor's user, or in group no-such-group-kb"
    )
    assert missing.refusal(OWN, OWN, OWN) is None  # no bots' identity: our user may
