"""``kissbotctl top``'s pure parts: CPU from the metrics text, CPU% between readings,
the frame at several sizes and sorts, and a supervisor that stops answering."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from kissbot_supervisor.cli.client import ControlError
from kissbot_supervisor.cli.top import (
    SORTS,
    Sample,
    _Top,
    cpu_from_metrics,
    cpu_percent,
    render_frame,
    run_top,
)
from kissbot_supervisor.observe.metrics import exposition, snapshot

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def proc(name: str, state: str = "running", **over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "state": state,
        "want": state != "stopped",
        "pid": None if state in ("stopped", "failed", "backoff") else 4000 + len(name),
        "uptime_s": 3725.0 if state == "running" else None,
        "restarts": 0,
        "rss_bytes": 48_000_000 if state == "running" else None,
    }
    entry.update(over)
    return entry


def fleet(*bots: dict[str, Any]) -> dict[str, Any]:
    return {
        "backend": "native",
        "supervisor": {"pid": 99, "uptime_s": 7200.0, "version": "0.1.0", "rss_bytes": 15_728_640},
        "hub": proc("hub", pid=4250),
        "bots": [{"channel": b["name"], **b} for b in bots],
    }


FLEET = fleet(
    proc("el_serda", pid=4251, restarts=2),
    proc("morthy", "failed", restarts=5),
    proc("a_quiet_one", "stopped"),
    proc("zz_busy", pid=4253, rss_bytes=300_000_000),
    proc("backing", "backoff", restarts=1),
)
CPU = {"hub": 0.25, "el_serda": 1.5, "zz_busy": 87.5}


def frame(width: int = 100, height: int | None = 30, sort: str = "state", **kw: Any) -> list[str]:
    return render_frame(
        Sample(FLEET, {}, None, 0.0),
        kw.pop("cpu", CPU),
        kw.pop("supervisor_cpu", 0.5),
        width=width,
        height=height,
        color=kw.pop("color", False),
        interval=2.0,
        sort=sort,
        clock="15:04:05",
        **kw,
    )


def names_in_order(lines: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith("NAME"))
    return [line.split()[0] for line in lines[start + 1 :] if line and not line.startswith("q ")]


def test_cpu_is_read_from_the_daemons_own_metrics_text() -> None:
    status = fleet(proc("el_serda", pid=4251), proc('odd\\na"me'))
    snap = snapshot(
        status,
        time=0.0,
        start_time=0.0,
        supervisor_cpu=1.25,
        extras={"el_serda": {"cpu_seconds": 2.5}, 'odd\\na"me': {"cpu_seconds": 0.5}},
    )
    per_process, own = cpu_from_metrics(exposition(snap))
    assert per_process == {"el_serda": 2.5, 'odd\\na"me': 0.5}
    assert own == 1.25
    assert cpu_from_metrics("") == ({}, None)


def test_cpu_percent_is_over_the_interval_and_only_for_the_same_pid() -> None:
    before = Sample(
        fleet(proc("el_serda", pid=10), proc("morthy", pid=20), proc("gone", pid=30)),
        {"el_serda": 1.0, "morthy": 5.0, "gone": 1.0, "hub": 2.0},
        10.0,
        100.0,
    )
    after = Sample(
        fleet(proc("el_serda", pid=10), proc("morthy", pid=21), proc("gone", "backoff")),
        {"el_serda": 1.5, "morthy": 0.1, "hub": 2.0},
        10.2,
        102.0,
    )
    shares, own = cpu_percent(before, after)
    assert shares["el_serda"] == pytest.approx(25.0)  # 0.5 s of CPU in 2 s
    assert shares["hub"] == 0.0
    assert "morthy" not in shares  # a new PID: its count started again
    assert "gone" not in shares  # no PID now
    assert own == pytest.approx(10.0)
    assert cpu_percent(None, after) == ({}, None)  # one reading: nothing to say yet


@pytest.mark.parametrize("width", [50, 60, 80, 120])
def test_every_line_fits_the_width_and_the_height(width: int) -> None:
    lines = frame(width=width, height=12)
    assert len(lines) == 12
    assert all(len(line) <= width for line in lines), lines
    assert lines[-1].startswith("q quit")


def test_the_frame_has_the_fleet_totals_and_a_row_per_process() -> None:
    lines = frame()
    assert lines[0].startswith("kissbot-supervisor 0.1.0 (native) · up 02:00:00 · every 2s")
    assert lines[0].endswith("15:04:05")
    assert lines[1] == "5 bots: 1 failed · 1 backoff · 1 stopped · 2 running · hub running"
    assert lines[2] == (
        "all: CPU 89.2% · memory 377.7M · 8 restarts · supervisor: CPU 0.5% · memory 15.0M"
    )
    text = "\n".join(lines)
    assert re.search(r"^NAME +STATE +PID +CPU% +MEM +RESTARTS +UPTIME$", text, re.M)
    assert re.search(r"^el_serda +running +4251 +1\.5 +45\.8M +2 +01:02:05$", text, re.M)
    assert re.search(r"^morthy +failed +- +- +- +5 +-$", text, re.M)


def test_columns_are_left_out_before_a_name_is_cut() -> None:
    text = "\n".join(frame(width=50))
    assert re.search(r"^NAME +STATE +CPU% +MEM +RESTARTS$", text, re.M)  # no PID, no UPTIME
    assert "a_quiet_one" in text
    narrow = "\n".join(frame(width=30))
    assert re.search(r"^NAME +STATE +CPU% +MEM$", narrow, re.M)


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("state", ["hub", "morthy", "backing", "a_quiet_one", "el_serda", "zz_busy"]),
        ("name", ["hub", "a_quiet_one", "backing", "el_serda", "morthy", "zz_busy"]),
        ("cpu", ["hub", "zz_busy", "el_serda", "a_quiet_one", "backing", "morthy"]),
        ("memory", ["hub", "zz_busy", "el_serda", "a_quiet_one", "backing", "morthy"]),
        ("restarts", ["hub", "morthy", "el_serda", "backing", "a_quiet_one", "zz_busy"]),
    ],
)
def test_sorts_keep_the_hub_on_top(sort: str, order: list[str]) -> None:
    assert sort in SORTS
    lines = frame(sort=sort)
    assert names_in_order(lines) == order
    assert f"by {sort}" in lines[0]


def test_rows_past_the_height_are_counted() -> None:
    lines = frame(height=10)
    assert names_in_order(lines) == ["hub", "morthy", "backing", "…"]
    assert "… 3 more (by state); a taller window shows them" in lines
    assert len(lines) == 10


def test_first_frame_has_no_cpu_yet_and_a_note_shows() -> None:
    lines = frame(cpu={}, supervisor_cpu=None, note="the supervisor does not answer")
    assert lines[2].startswith("all: CPU -% ·")
    assert lines[3] == "the supervisor does not answer"


def test_colour_is_only_escapes_around_the_state_and_header() -> None:
    plain = frame(color=False)
    painted = frame(color=True)
    assert [ESCAPES.sub("", line).rstrip() for line in painted] == [line for line in plain]
    assert not any("\x1b" in line for line in plain)


def test_a_bots_text_cannot_reach_the_terminal_as_escapes() -> None:
    evil = fleet(proc("el_serda", state="running\x1b[2J"))
    lines = render_frame(
        Sample(evil, {}, None, 0.0),
        {},
        None,
        width=80,
        height=None,
        color=False,
        interval=1.0,
        sort="name",
        clock="",
    )
    assert not any("\x1b" in line for line in lines)


class FakeClient:
    """Answers status and metrics from a script; ``fail`` makes it refuse."""

    def __init__(self, answers: list[dict[str, Any] | Exception]) -> None:
        self.answers = answers
        self.closed = 0

    def request(self, obj: dict[str, Any]) -> dict[str, Any]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.closed += 1


def reading(status: dict[str, Any]) -> list[dict[str, Any] | Exception]:
    return [{"ok": True, "status": status}, {"ok": True, "metrics": ""}]


def test_a_supervisor_that_stops_answering_is_said_and_asked_again() -> None:
    gone = ControlError("no answer from the supervisor")
    clients = [FakeClient([*reading(FLEET), gone]), FakeClient(reading(fleet()))]
    made: list[FakeClient] = []

    def connect() -> Any:
        made.append(clients[len(made)])
        return made[-1]

    top = _Top(connect, 2.0, "state", False)
    top.read()
    top.read()  # refused: the last frame stays, with a note
    lines = top.frame(80, None)
    assert "no answer from the supervisor; asking again every 2s" in lines
    assert "morthy" in "\n".join(lines)
    assert made[0].closed == 1
    top.read()  # the new connection answers: the note goes
    assert top.note is None
    assert "0 bots: none" in top.frame(80, None)[1]


def test_a_supervisor_that_never_answered_is_the_usual_error() -> None:
    client = FakeClient([ControlError("cannot connect")])
    out = io.StringIO()
    with pytest.raises(ControlError, match="cannot connect"):
        run_top(
            lambda: client,  # type: ignore[arg-type, return-value]
            interval=0.01,
            sort="state",
            out=out,
            keys_fd=None,
            color=False,
            size=lambda: (80, 24),
        )
    assert client.closed == 1
    assert out.getvalue() == ""


def test_off_a_terminal_one_frame_without_escapes() -> None:
    client = FakeClient([*reading(FLEET), *reading(FLEET)])
    out = io.StringIO()
    code = run_top(
        lambda: client,  # type: ignore[arg-type, return-value]
        interval=0.01,
        sort="name",
        out=out,
        keys_fd=None,
        color=False,
        size=lambda: (80, 24),
    )
    assert code == 0
    text = out.getvalue()
    assert "\x1b" not in text
    assert text.count("NAME") == 1
    assert "zz_busy" in text  # every row, whatever the height
    assert "q quit" not in text


def test_top_is_in_the_help_and_the_man_page(capsys: pytest.CaptureFixture[str]) -> None:
    from kissbot_supervisor.cli.ctl import main
    from kissbot_supervisor.cli.manpage import ctl_page

    assert main(["--help"]) == 0
    assert re.search(r"^    top +A live view", capsys.readouterr().out, re.M)
    assert main(["top", "--help"]) == 0
    usage = capsys.readouterr().out
    assert "--interval SEC" in usage
    assert "{state,name,cpu,memory,restarts}" in usage
    page = ctl_page()
    assert "\\fBtop\\fR" in page
    assert "\\fB\\-\\-interval\\fR \\fISEC\\fR" in page
    assert main(["top", "--interval", "0"]) == 2  # a refresh needs some time between
    assert "must be a positive number of seconds" in capsys.readouterr().err


def test_the_totals_fold_onto_two_lines_when_narrow() -> None:
    lines = frame(width=60)
    assert lines[2] == "all: CPU 89.2% · memory 377.7M · 8 restarts"
    assert lines[3] == "supervisor: CPU 0.5% · memory 15.0M"
    assert lines[4] == ""
