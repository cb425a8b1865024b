"""runtime.inotify.DirectoryWatches: one inotify instance, real files, a real loop."""

from __future__ import annotations

import os
from pathlib import Path

from kissbot_supervisor.runtime.inotify import IN_CLOSE_WRITE, IN_DELETE
from kissbot_supervisor.runtime.loop import Loop


def run_until(loop: Loop, done: list[object], count: int) -> None:
    """Turn the loop until ``count`` callbacks came; a missing event fails (bounded)."""
    for _ in range(200):
        if len(done) >= count:
            return
        loop.call_later(0.05, lambda: None)  # a wake-up bound, not a synchronisation
        loop.run_once()
    raise AssertionError(f"{len(done)} of {count} callbacks came")


def test_two_subscribers_share_one_instance_and_get_their_own_events(tmp_path: Path) -> None:
    loop = Loop()
    writes: list[object] = []
    deletes: list[object] = []
    try:
        a = loop.watches.subscribe(tmp_path, IN_CLOSE_WRITE, writes.append)
        loop.watches.subscribe(tmp_path, IN_DELETE, deletes.append)
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
        inotify_fds = [
            fd for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")
            and os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
        ]  # fmt: skip
        assert len(inotify_fds) == 1
        (tmp_path / "x.ready").write_text("1")
        run_until(loop, writes, 1)
        assert writes == [[("x.ready", IN_CLOSE_WRITE)]]
        assert deletes == []
        (tmp_path / "x.ready").unlink()
        run_until(loop, deletes, 1)
        assert deletes == [[("x.ready", IN_DELETE)]]
        # A cancelled subscriber hears nothing more; the other still does.
        loop.watches.cancel(a)
        (tmp_path / "y.ready").write_text("1")
        (tmp_path / "y.ready").unlink()
        run_until(loop, deletes, 2)
        assert deletes[1] == [("y.ready", IN_DELETE)]
        assert len(writes) == 1
    finally:
        loop.close()


def test_an_unwatch_is_no_overflow(tmp_path: Path) -> None:
    # After inotify_rm_watch the kernel queues IN_IGNORED for the removed watch.
    # Taken for an overflow, it told every other subscriber to re-check all; the
    # system-log watcher re-watches on an overflow, so one reload that dropped a
    # bot made the daemon spin for good.
    loop = Loop()
    kept: list[object] = []
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        loop.watches.subscribe(tmp_path / "a", IN_CLOSE_WRITE, kept.append)
        gone = loop.watches.subscribe(tmp_path / "b", IN_CLOSE_WRITE, lambda _e: None)
        loop.watches.cancel(gone)
        (tmp_path / "a" / "x").write_text("1")
        run_until(loop, kept, 1)
        assert kept == [[("x", IN_CLOSE_WRITE)]]  # no (None, 0): nothing was lost
    finally:
        loop.close()
