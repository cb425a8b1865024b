"""The native backend's log files on real files, with a fake clock for their retries."""

from __future__ import annotations

import io
import re
from pathlib import Path

from kissbot_supervisor.backends.native.logfiles import RETRY_AFTER, LogFile
from kissbot_supervisor.runtime.log import Log
from linewatch import wait_until

from .conftest import StartFleet
from .harness import fleet_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_file_is_reported_once_retried_quietly_and_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the directory should be")  # mkdir fails: ENOTDIR
    said: list[str] = []
    clock = Clock()
    log = LogFile(blocker / "bot.log", 1 << 20, 1, said.append, clock=clock)
    log.write_chunk(b"one\ntwo\n", now=0.0)
    assert len(said) == 1
    assert said[0].startswith(f"cannot open {blocker / 'bot.log'}: ")
    assert said[0].endswith("; output is dropped until it works again")
    # Before the retry is due, nothing is tried; once due, a retry that fails again
    # neither claims recovery nor reports the error a second time.
    clock.now += RETRY_AFTER - 1
    log.write_chunk(b"three\n", now=0.0)
    clock.now += 2
    log.write_chunk(b"four\n", now=0.0)
    assert len(said) == 1
    assert log.dropped_lines == 4
    # The fault goes; the next retry writes, and says how much was lost.
    blocker.unlink()
    log.write_chunk(b"five\n", now=0.0)
    assert len(said) == 1  # not due yet: the last failed try was just now
    clock.now += RETRY_AFTER
    log.write_chunk(b"six\n", now=0.0)
    assert said[1] == f"{blocker / 'bot.log'} is writable again (5 lines were lost)"
    assert (blocker / "bot.log").read_text().splitlines()[-1].endswith(" six")
    log.close()


def test_the_supervisors_own_log_is_kept_in_a_file_too(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    # A background run's stderr goes nowhere: the native backend's daemon also
    # writes its log next to the processes' logs, rotated as they are.
    doc = fleet_config(["el_serda"], supervisor={"logs": {"max_bytes": 4096, "backups": 1}})
    sup = start_fleet(doc)
    sup.wait_for(r"el_serda: ready")
    own = tmp_path / "logs" / "supervisor" / "kissbot-supervisor.log"
    wait_until(lambda: own.exists() and "el_serda: ready" in own.read_text(), what="own log")
    lines = own.read_text().splitlines()
    assert any(
        re.search(r"^\S+ supervisor: kissbot-supervisor \S+ \(native backend\)", ln) for ln in lines
    )
    # Rotated like the processes' logs: past max_bytes, one backup is kept.
    for _ in range(200):  # a restart logs about 200 bytes: 4096 are passed well before
        if own.with_name(own.name + ".1").exists():
            break
        assert sup.ctl("restart", "el_serda").returncode == 0
    assert own.with_name(own.name + ".1").exists()
    assert own.stat().st_size < 4096
    sup.stop()
    assert "supervisor: stopped" in own.read_text()


def test_a_sink_gets_every_line_and_never_itself() -> None:
    stream = io.StringIO()
    log = Log(stream)
    seen: list[str] = []

    def sink(line: str) -> None:
        seen.append(line)
        log.warning("sink", "failing")  # a failing file says so: not back into the sink

    log.add_sink(sink)
    log.info("el_serda", "ready")
    assert seen == ["el_serda: ready"]
    assert "el_serda: ready" in stream.getvalue()
    assert "sink: failing" in stream.getvalue()
