"""records.record: what it does like a dataclass, and what it refuses."""

from __future__ import annotations

from typing import ClassVar

import pytest

from kissbot_supervisor.core.records import field, fields, record, replace
from kissbot_supervisor.tokens.db import DbRetry


@record
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(factory=list)

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError(f"x must not be negative, got {self.x}")


def test_init_defaults_factories_and_equality() -> None:
    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 0, [])
    assert Point(1).tags is not p.tags  # a factory makes one per instance
    assert p == Point(1, 0, [])
    assert fields(p) == ("x", "y", "tags")
    assert repr(p) == "Point(x=1, y=0, tags=[])"
    with pytest.raises(AttributeError, match="frozen"):
        p.x = 2  # type: ignore[misc]


def test_post_init_runs_on_construction_and_on_replace() -> None:
    with pytest.raises(ValueError, match="negative"):
        Point(-1)
    with pytest.raises(ValueError, match="negative"):
        replace(Point(1), x=-5)
    # The checks of the daemon's own records run too.
    with pytest.raises(ValueError, match="attempts >= 1"):
        DbRetry(attempts=0)
    with pytest.raises(ValueError, match="no negative times"):
        DbRetry(busy_timeout=-1)


def test_a_mutable_default_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match=r"Bad\.items: mutable default list"):

        @record
        class Bad:
            items: list[int] = []  # noqa: RUF012 - the mistake under test


def test_a_classvar_is_refused_rather_than_made_a_field() -> None:
    with pytest.raises(TypeError, match=r"Shared\.count: a ClassVar"):

        @record
        class Shared:
            count: ClassVar[int] = 0
            name: str = ""
