"""``kissbotctl logs`` of several processes: --since, --grep, the merge by time, the prefix."""

from __future__ import annotations

import time

import pytest

from kissbot_supervisor.cli.fleetlogs import grep_matcher, merge, parse_since, prefixer
from kissbot_supervisor.cli.logs import JournalLog, file_line_time

# 2026-11-24 15:30:00, local time (the tests' own clock, whatever the zone).
NOW = time.mktime((2026, 11, 24, 15, 30, 0, 0, 0, -1))


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> float:
    return time.mktime((year, month, day, hour, minute, sec, 0, 0, -1))


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("10m", NOW - 600),
        ("-10m", NOW - 600),
        ("2h", NOW - 7200),
        ("1.5h ago", NOW - 5400),
        ("1d", NOW - 86400),
        ("90s", NOW - 90),
        ("today", local(2026, 11, 24)),
        ("Yesterday", local(2026, 11, 23)),
        ("14:05", local(2026, 11, 24, 14, 5)),
        ("14:05:30", local(2026, 11, 24, 14, 5, 30)),
        ("2026-11-20", local(2026, 11, 20)),
        ("2026-11-20 08:15", local(2026, 11, 20, 8, 15)),
        ("2026-11-20T08:15:09", local(2026, 11, 20, 8, 15, 9)),
    ],
)
def test_since(text: str, when: float) -> None:
    assert parse_since(text, NOW) == when


@pytest.mark.parametrize("text", ["soon", "10 parsecs", "2026-13-01", "25:00", ""])
def test_since_says_what_it_understands(text: str) -> None:
    with pytest.raises(ValueError, match="is not a time --since understands") as caught:
        parse_since(text, NOW)
    assert "10m, 2h, 1d" in str(caught.value)


def test_grep_is_case_insensitive_unless_the_pattern_has_a_capital() -> None:
    smart = grep_matcher("error|fatal")
    assert smart("Fatal start-up ERROR")
    assert not smart("all is well")
    exact = grep_matcher("ERROR")
    assert exact("an ERROR here")
    assert not exact("an error here")


def test_a_bad_regex_is_said_so() -> None:
    with pytest.raises(ValueError, match=r"--grep 'joined \(' is not a regular expression"):
        grep_matcher("joined (")


def test_merge_by_time_keeping_each_logs_order() -> None:
    merged = merge(
        [
            ("alpha_one", [(1.0, "a1"), (3.0, "a3"), (3.0, "a3b")]),
            ("beta_two", [(0.5, "b0"), (3.0, "b3"), (4.0, "b4")]),
        ]
    )
    assert merged == [
        ("beta_two", "b0"),
        ("alpha_one", "a1"),
        ("alpha_one", "a3"),
        ("alpha_one", "a3b"),
        ("beta_two", "b3"),
        ("beta_two", "b4"),
    ]


def test_prefix_pads_the_names_and_colours_them_only_when_asked() -> None:
    plain = prefixer(["hub", "el_serda"], color=False)
    assert plain("hub", "x") == "hub      | x"
    assert plain("el_serda", "y") == "el_serda | y"
    coloured = prefixer(["hub", "el_serda"], color=True)("hub", "x")
    assert coloured.startswith("\x1b[")
    assert coloured.endswith("hub     \x1b[0m | x")


def test_file_line_time() -> None:
    assert file_line_time("2026-11-24T15:30:00.250 hello") == local(2026, 11, 24, 15, 30) + 0.25
    assert file_line_time("Traceback (most recent call last):") is None
    assert file_line_time("2026-11-24T15:30:00,250 not ours") is None


# --- the journal's side, on a stand-in for systemd.journal.Reader ------------------------


class FakeReader:
    """Entries in journal order and a cursor position, as systemd.journal.Reader moves."""

    def __init__(self, entries: list[dict[str, object]]) -> None:
        self.entries = entries
        self.pos = len(entries)  # between entries: get_next returns entries[pos]

    def seek_tail(self) -> None:
        self.pos = len(self.entries)

    def get_previous(self) -> dict[str, object]:
        if self.pos == 0:
            return {}
        self.pos -= 1
        return self.entries[self.pos]

    def get_next(self) -> dict[str, object]:
        if self.pos >= len(self.entries):
            return {}
        self.pos += 1
        return self.entries[self.pos - 1]

    def seek_cursor(self, cursor: str) -> None:
        self.pos = next(i for i, e in enumerate(self.entries) if e["__CURSOR"] == cursor)

    def close(self) -> None:
        pass


def entry(n: int, message: str | None) -> dict[str, object]:
    e: dict[str, object] = {"__CURSOR": f"c{n}", "__REALTIME_TIMESTAMP": n * 1_000_000}
    if message is not None:
        e["MESSAGE"] = message
    return e


def journal(entries: list[dict[str, object]]) -> JournalLog:
    log = JournalLog.__new__(JournalLog)  # no systemd-python Reader: the stand-in
    log.unit = "kissbot-bot@el_serda.service"
    log._reader = FakeReader(entries)
    log._newest = None
    log._following = False
    return log


def test_journal_tail_since_grep_then_the_new_entries() -> None:
    entries = [entry(1, "starting"), entry(2, "ERROR one"), entry(3, None), entry(4, "joined")]
    log = journal(entries)
    assert [m.split(" ", 3)[3] for m in log.tail(2)] == ["ERROR one", "joined"]
    since = log.timed_tail(None, since=2.0)
    assert [(t, m.split(" ", 3)[3]) for t, m in since] == [(2.0, "ERROR one"), (4.0, "joined")]
    (found,) = log.timed_tail(10, match=grep_matcher("error"))
    assert found[0] == 2.0
    assert found[1].endswith(" ERROR one")
    # Following goes on after the newest entry read, whatever was shown of them.
    entries += [entry(5, "chat error"), entry(6, "fine")]
    new = log.timed_poll(grep_matcher("error"))
    assert [(t, m.split(" ", 3)[3]) for t, m in new] == [(5.0, "chat error")]
    assert log.timed_poll() == []
