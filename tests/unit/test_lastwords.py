"""The journal query and the parsing of its answer (backends/systemd/lastwords.py). Pure."""

from __future__ import annotations

import json

from kissbot_supervisor.backends.systemd.lastwords import (
    KEEP,
    MAX_ENTRIES,
    MAX_LINE,
    journal_argv,
    last_lines_by_pid,
)

UNIT = "kissbot-bot@a.service"


def entry(pid: int, message: object, unit: str = UNIT) -> bytes:
    fields = {"__CURSOR": "s=1", "_PID": str(pid), "_SYSTEMD_UNIT": unit, "MESSAGE": message}
    return json.dumps(fields).encode()


def test_the_query_matches_each_pid_in_the_units_as_json() -> None:
    argv = journal_argv(
        "/usr/bin/journalctl", [("kissbot-bot@b.service", 7), ("kissbot-bot@a.service", 5)]
    )
    assert argv[0] == "/usr/bin/journalctl"
    assert "--output=json" in argv
    assert "--all" in argv  # long or binary messages in full, not null
    assert argv[-4:] == [
        "_SYSTEMD_UNIT=kissbot-bot@a.service",
        "_SYSTEMD_UNIT=kissbot-bot@b.service",
        "_PID=5",
        "_PID=7",
    ]


def test_the_query_reads_back_far_enough_for_every_exit_but_not_without_bound() -> None:
    one = journal_argv("journalctl", [("u.service", 1)])
    many = journal_argv("journalctl", [("u.service", pid) for pid in range(1, 1000)])
    lines = [int(a.split("=")[1]) for a in (*one, *many) if a.startswith("--lines=")]
    assert lines[0] < lines[1] == MAX_ENTRIES


def test_each_pid_gets_its_own_last_non_blank_lines() -> None:
    output = b"\n".join(
        [
            entry(5, "starting"),
            entry(7, "Traceback (most recent call last):"),
            entry(5, "line two"),
            entry(7, '  File "main.py", line 1'),
            entry(5, "   "),
            entry(7, "OSError: [Errno -3] Temporary failure in name resolution"),
            entry(5, "line three"),
            entry(5, "the last one"),
            entry(9, "another process's line"),
        ]
    )
    found = last_lines_by_pid(output, [(UNIT, 5), (UNIT, 7)])
    assert found[5] == ("line two", "line three", "the last one")
    assert len(found[5]) == KEEP
    assert found[7][-1] == "OSError: [Errno -3] Temporary failure in name resolution"
    assert 9 not in found


def test_a_message_that_is_not_utf8_comes_as_bytes_and_is_still_read() -> None:
    raw = list("café ".encode("latin-1")) + list(b"exit")
    found = last_lines_by_pid(entry(3, raw), [(UNIT, 3)])
    assert found[3][-1].endswith(" exit")
    assert "\ufffd" in found[3][-1]


def test_a_multi_line_message_counts_line_by_line() -> None:
    found = last_lines_by_pid(entry(3, "first\nsecond\n\nthird"), [(UNIT, 3)])
    assert found[3] == ("first", "second", "third")


def test_what_is_not_an_entry_is_skipped() -> None:
    output = b"\n".join(
        [
            b"Hint: You are currently not seeing messages from other users",
            b"{not json",
            b"[1, 2]",
            json.dumps(["a list"]).encode(),
            entry(3, None),  # a field journalctl left out
            entry(3, [300, 1]),  # not bytes
            entry(3, "kept"),
        ]
    )
    assert last_lines_by_pid(output, [(UNIT, 3)]) == {3: ("kept",)}
    assert last_lines_by_pid(b"", [(UNIT, 3)]) == {}


def test_a_pid_counts_only_in_its_own_unit_and_a_line_is_cut() -> None:
    output = b"\n".join(
        [
            entry(3, "its own words"),
            entry(3, "another unit's process with the same PID", unit="kissbot-hub.service"),
            entry(4, "x" * 5000),
        ]
    )
    found = last_lines_by_pid(output, [(UNIT, 3), (UNIT, 4)])
    assert found[3] == ("its own words",)
    assert found[4] == ("x" * MAX_LINE,)
