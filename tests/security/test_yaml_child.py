"""The supervisor parses KissBot's config in a child of its own (config/yamlparse.py):
Python modules the bots' user drops in the checkout are never imported there, as root."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from process.harness import SUPERVISOR, TIMEOUT, fleet_config

from .conftest import StartFleet, as_bots_user

PLANT = "import pathlib; pathlib.Path({marker!r}).write_text('imported as root')\n"


def test_modules_planted_in_the_checkout_are_not_imported(
    start_fleet: StartFleet, workdir: Path
) -> None:
    marker = workdir / "pwned"
    sup = start_fleet(fleet_config(["plant_chan"]))
    sup.wait_for(r"plant_chan: ready")
    # The names the YAML child imports (directly or through the standard library),
    # dropped where `python -m` would have looked first: the cwd, the checkout.
    for module in ("yaml", "json", "kissbot_supervisor", "encodings"):
        as_bots_user(f"cat > {module}.py <<'EOF'\n{PLANT.format(marker=str(marker))}EOF", workdir)
    assert sup.request({"cmd": "reload"})["ok"] is True  # the config is parsed again
    check = subprocess.run(
        [SUPERVISOR, "--workdir", str(workdir), "--check-config", *sup.extra_args],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, cwd=workdir,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert not marker.exists()


def test_a_child_that_never_answers_is_killed_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a FIFO planted as kissbot.db would do to the token worker (SQLite
    # opens the DB by name): the child blocks, and the daemon must not with it.
    from kissbot_supervisor.runtime import child

    monkeypatch.setattr(child, "BOOTSTRAP", "import time\ntime.sleep(600)\n")
    with pytest.raises(child.ChildError, match=r"gave no answer within 0\.5 s; killed"):
        child.run_module("kissbot_supervisor.tokens.worker", b"{}", timeout=0.5)


def test_a_child_is_read_when_the_daemon_has_descriptors_above_1024() -> None:
    # A native fleet of a few hundred bots: select() would refuse the pipe's number.
    import resource

    from kissbot_supervisor.runtime import child

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1100:
        pytest.skip(f"the descriptor limit ({hard}) is below 1100")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1100), hard))
    held: list[int] = []
    try:
        while not held or held[-1] < 1030:
            held.append(os.open(os.devnull, os.O_RDONLY))
        answer, code = child.run_module("kissbot_supervisor.tokens.worker", b"not json")
        assert (code, answer.startswith(b'{"error"')) == (0, True)  # read to its end
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_child_that_answers_without_end_is_killed_at_its_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kissbot_supervisor.runtime import child

    flood = "import sys\nwhile True:\n    sys.stdout.buffer.write(b'x' * 65536)\n"
    monkeypatch.setattr(child, "BOOTSTRAP", flood)
    with pytest.raises(child.ChildError, match=r"answered more than \d+ bytes; killed"):
        child.run_module("kissbot_supervisor.tokens.worker", b"{}")
