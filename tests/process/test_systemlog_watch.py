"""kissbot.systemlog.SystemLogWatcher: real files, a real loop, in this process.

The watcher's verdicts on a hostile or changing workdir, without a supervisor
around it: each write of a regular file reached without a symlink is one sign
of life; nothing else is.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kissbot_supervisor.kissbot.names import system_log
from kissbot_supervisor.kissbot.systemlog import CHECK_GAP_SEC, SystemLogWatcher
from kissbot_supervisor.runtime.log import Log
from kissbot_supervisor.runtime.loop import Loop

from .test_inotify_dispatch import run_until

CH = "watched_one"


class Watch:
    """A watcher on ``workdir`` for CH, its signs of life and its warnings."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.loop = Loop()
        self.lives: list[str] = []
        self.warnings: list[str] = []
        log = Log()
        log.add_sink(self.warnings.append)
        self.watcher = SystemLogWatcher(self.loop, workdir, self.lives.append, log)
        self.watcher.configure({CH: system_log(CH)})
        self.file = workdir / system_log(CH)

    def settle(self) -> None:
        """Turn the loop until no event is pending (a few idle turns)."""
        for _ in range(5):
            self.loop.call_later(0.02, lambda: None)
            self.loop.run_once()

    def write(self, text: str = "CPU: 0.1s RAM: 1 KiB\n") -> None:
        with open(self.file, "a", encoding="utf-8") as f:
            f.write(text)

    def after_gap(self) -> None:
        """Wait out the watcher's one-check-a-second gap, turning the loop meanwhile."""
        until = self.loop.now() + CHECK_GAP_SEC
        while self.loop.now() < until:
            self.loop.call_later(until - self.loop.now(), lambda: None)
            self.loop.run_once()


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[Watch]:
    (tmp_path / "logs").mkdir()
    w = Watch(tmp_path)
    try:
        yield w
    finally:
        w.watcher.close()
        w.loop.close()


def test_a_file_already_there_is_no_news_and_each_write_is_a_sign_of_life(tmp_path: Path) -> None:
    # The previous incarnation's file: not this bot's sign of life.
    directory = tmp_path / "logs" / "broadcast" / CH
    directory.mkdir(parents=True)
    (directory / "system.log").write_text("old line\n")
    w = Watch(tmp_path)
    try:
        w.settle()
        assert w.lives == []
        w.write()
        run_until(w.loop, w.lives, 1)  # type: ignore[arg-type]
        w.after_gap()
        w.write()
        run_until(w.loop, w.lives, 2)  # type: ignore[arg-type]
        assert w.lives == [CH, CH]
    finally:
        w.watcher.close()
        w.loop.close()


def test_directories_made_after_the_watch_began_are_followed_down(watch: Watch) -> None:
    # The bot makes logs/broadcast/CH/ on its first line, after the supervisor started.
    watch.settle()
    watch.file.parent.mkdir(parents=True)
    watch.write()
    run_until(watch.loop, watch.lives, 1)  # type: ignore[arg-type]
    assert watch.lives == [CH]


def test_a_rotated_file_and_a_directory_made_again_are_still_watched(watch: Watch) -> None:
    watch.file.parent.mkdir(parents=True)
    watch.settle()
    watch.write()
    run_until(watch.loop, watch.lives, 1)  # type: ignore[arg-type]
    # Rotation: the file moved away, a new one in its place.
    watch.after_gap()
    watch.file.rename(watch.file.with_name("system.log.1"))
    watch.write()
    run_until(watch.loop, watch.lives, 2)  # type: ignore[arg-type]
    # The whole directory removed and made again, in one go (one batch of events).
    watch.after_gap()
    (watch.file.parent / "system.log").unlink()
    (watch.file.parent / "system.log.1").unlink()
    watch.file.parent.rmdir()
    watch.file.parent.mkdir()
    watch.settle()
    watch.after_gap()
    watch.write()
    run_until(watch.loop, watch.lives, 3)  # type: ignore[arg-type]


def test_a_symlink_in_place_of_the_file_is_no_sign_of_life(watch: Watch, tmp_path: Path) -> None:
    watch.file.parent.mkdir(parents=True)
    outside = tmp_path / "elsewhere.log"
    outside.write_text("")
    watch.file.symlink_to(outside)
    watch.settle()
    for _ in range(3):
        with open(outside, "a") as f:  # written through it, or beside it: neither counts
            f.write("x\n")
        with open(watch.file, "a") as f:
            f.write("x\n")
    watch.settle()
    assert watch.lives == []
    # Replaced by a regular file again: its writes count once more.
    watch.file.unlink()
    watch.write()
    run_until(watch.loop, watch.lives, 1)  # type: ignore[arg-type]


def test_a_symlinked_directory_on_the_way_is_not_followed_and_is_said(
    watch: Watch, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    (real / CH).mkdir(parents=True)
    (tmp_path / "logs" / "broadcast").symlink_to(real)
    watch.settle()
    with open(real / CH / "system.log", "a") as f:
        f.write("x\n")
    watch.settle()
    assert watch.lives == []
    assert any("logs/broadcast is a symlink (not followed)" in w for w in watch.warnings)


def test_a_fifo_in_place_of_the_file_neither_blocks_nor_counts(watch: Watch) -> None:
    watch.file.parent.mkdir(parents=True)
    os.mkfifo(watch.file)
    # Should the watcher open the FIFO for reading, it would block for good: this
    # thread then opens it for writing after a while, which lets it go, and says so.
    rescued = threading.Event()
    done = threading.Event()

    def rescue() -> None:
        if not done.wait(10.0):
            rescued.set()
            os.close(os.open(watch.file, os.O_WRONLY | os.O_NONBLOCK))

    rescuer = threading.Thread(target=rescue, daemon=True)
    rescuer.start()
    try:
        # The bot writes "into" it (opened read-write, so that nothing waits).
        for _ in range(3):
            fd = os.open(watch.file, os.O_RDWR)
            os.write(fd, b"x\n")
            os.close(fd)
            watch.settle()
    finally:
        done.set()
        rescuer.join()
    assert not rescued.is_set(), "the watcher blocked on the FIFO"
    assert watch.lives == []
    assert any("system.log: is a FIFO" in w for w in watch.warnings)


def test_a_write_loop_is_passed_on_at_most_once_a_second(watch: Watch) -> None:
    watch.file.parent.mkdir(parents=True)
    watch.settle()
    start = watch.loop.now()
    while watch.loop.now() - start < 0.5:
        watch.write()
        watch.loop.call_later(0.01, lambda: None)
        watch.loop.run_once()
    assert watch.lives == [CH]


def test_a_bot_no_longer_configured_is_no_longer_watched(watch: Watch) -> None:
    watch.file.parent.mkdir(parents=True)
    watch.settle()
    watch.watcher.configure({})
    watch.write()
    watch.settle()
    assert watch.lives == []
