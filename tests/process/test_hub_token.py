"""The hub's token, as KissBot's hub really loads it (issue 13, part 5).

The real hub always loads the broadcaster token of ``el_serda`` (hard-coded
upstream) from the token DB, whatever the config says, and in YAML token mode
too; it exits 1 without it ("No broadcaster token found for el_serda"). The
token gate checks that token for the hub, and says ``unchecked`` only where
nothing was checked.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from fixtures.kissbot_db import KissbotDb, write_key_file

from .conftest import StartFleet
from .harness import SUPERVISOR, TIMEOUT, fleet_config, write_config

DAY = 86_400.0


def _db(tmp_path: Path) -> KissbotDb:
    db = KissbotDb.create(tmp_path / "kissbot.db", key=write_key_file(tmp_path))
    db.add_account("serda_bot", "1001", "bot-secret", expires_at=time.time() + DAY)
    # A valid broadcaster token, of the broadcaster the config names, but not el_serda.
    db.add_account(
        "the_caster", "3003", "caster", expires_at=time.time() + DAY, token_type="broadcaster"
    )
    return db


def test_db_mode_checks_the_broadcaster_token_of_the_hubs_login(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    db = _db(tmp_path)
    doc = fleet_config(["caster_chan"], hub=True, supervisor={"use_db": True})
    doc["twitch"]["broadcaster_id"] = "3003"  # KissBot's hub does not read it
    sup = start_fleet(doc)
    sup.wait_for(r"hub: not started: no broadcaster token for el_serda in ")
    hub = sup.status()["hub"]
    assert (hub["state"], hub["token_state"], hub["pid"]) == ("stopped", "missing", None)
    assert "the hub loads that one (hub.token_login) and exits 1 without it" in hub["reason"]
    # el_serda authorises: the hub starts without a reload.
    db.add_account(
        "el_serda", "2002", "caster", expires_at=time.time() + DAY, token_type="broadcaster"
    )
    sup.wait_for(r"hub: ready")
    assert sup.status()["hub"]["token_state"] == "valid"


def test_hub_token_login_names_another_login(start_fleet: StartFleet, tmp_path: Path) -> None:
    _db(tmp_path)
    doc = fleet_config(
        ["patched_chan"],
        hub=True,
        supervisor={"use_db": True, "hub": {"token_login": "The_Caster"}},
    )
    sup = start_fleet(doc)
    sup.wait_for(r"hub: ready")
    assert sup.status()["hub"]["token_state"] == "valid"


def test_yaml_mode_checks_the_hubs_token_in_the_db(start_fleet: StartFleet, tmp_path: Path) -> None:
    db = _db(tmp_path)
    db.add_account(
        "el_serda",
        "2002",
        "caster",
        expires_at=time.time() + DAY,
        token_type="broadcaster",
        status="revoked",
    )
    doc = fleet_config(["yaml_chan"], hub=True)
    # YAML token mode: the bots' token is in the config, and even a valid-looking
    # entry for el_serda there is not what the hub loads.
    doc["twitch"]["tokens"] = {
        "serda_bot": {"user_id": "1001", "access_token": "bot-secret"},
        "el_serda": {"user_id": "2002", "access_token": "caster"},
    }
    sup = start_fleet(doc)
    sup.wait_for(r"hub: not started: broadcaster token of el_serda is revoked in ")
    status = sup.status()
    assert status["hub"]["token_state"] == "revoked"
    assert sup.bot("yaml_chan")["token_state"] == "valid"  # from twitch.tokens


def test_yaml_mode_without_a_db_leaves_the_hub_unchecked_and_says_why(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    doc = fleet_config(["nodb_chan"], hub=True)
    write_config(tmp_path, doc)
    checked = subprocess.run(
        [SUPERVISOR, "--workdir", str(tmp_path), "--check-config"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert (
        "note: the hub: token not checked: the hub reads the broadcaster token of el_serda "
        f"from {tmp_path / 'kissbot.db'} in YAML token mode too, and "
        f"{tmp_path / 'kissbot.db'} does not exist" in checked.stdout
    )
    sup = start_fleet(doc)
    sup.wait_for(r"hub: ready")  # unchecked does not keep it from starting
    assert sup.status()["hub"]["token_state"] == "unchecked"
    assert sup.bot("nodb_chan")["token_state"] == "unchecked"  # no twitch.tokens either
