"""The native backend's log files on real files, with a fake clock for their retries."""

from __future__ import annotations

from pathlib import Path

from kissbot_supervisor.backends.native.logfiles import RETRY_AFTER, LogFile


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
