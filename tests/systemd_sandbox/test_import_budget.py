"""The resident daemon's imports held to their budget (tests/import_budget.py) on
the systemd backend: the supervisor as a unit, its stderr (where
PYTHONPROFILEIMPORTTIME writes) in the journal."""

from __future__ import annotations

import pytest

from import_budget import SYSTEMD, SYSTEMD_NEVER_OURS, imported, over_budget

from .fleet import Fleet, config, start


@pytest.mark.slow
def test_systemd_backend_stays_within_its_import_budget(fleet: Fleet) -> None:
    dropin = fleet.sandbox.units_dir / "kissbot-supervisor.service.d" / "importtime.conf"
    dropin.write_text("[Service]\nEnvironment=PYTHONPROFILEIMPORTTIME=1\n")
    fleet.sandbox.daemon_reload()
    doc = config(["budget_one", "budget_two"], supervisor={"bot": {"watchdog_sec": 5}})
    start(fleet, doc)
    fleet.journal.wait_for(r"hub: ready")
    fleet.journal.wait_for(r"budget_one: ready")
    fleet.journal.wait_for(r"budget_two: ready")
    assert fleet.ctl("status").returncode == 0
    assert fleet.ctl("metrics").returncode == 0
    doc["twitch"]["channels"].append("budget_late")
    fleet.write_config(doc)
    assert fleet.ctl("reload").returncode == 0
    fleet.journal.wait_for(r"budget_late: ready")
    mark = fleet.journal.mark()
    assert fleet.ctl("restart", "budget_one").returncode == 0
    fleet.journal.wait_for(r"budget_one: ready", since=mark)
    mark = fleet.journal.mark()
    fleet.sandbox.systemctl("kill", "-s", "KILL", "kissbot-bot@budget_two.service")
    fleet.journal.wait_for(r"budget_two: ready", since=mark)
    fleet.sandbox.systemctl("stop", "kissbot-supervisor")
    fleet.journal.wait_for(r"supervisor: stopped$")
    modules = imported(fleet.journal.lines)
    assert "kissbot_supervisor.backends.systemd.backend" in modules  # the lines were the daemon's
    problems = over_budget(modules, SYSTEMD, SYSTEMD_NEVER_OURS)
    assert not problems, "\n".join(problems)
