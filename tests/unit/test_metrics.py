"""Metrics, events, the hook environment and the HTTP responder: the pure parts.

The exposition is checked with the real Prometheus text parser
(``prometheus_client.parser``), not by comparing strings with our own idea of
the format.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kissbot_supervisor.config.settings import SettingValueError, optional_listen, split_listen
from kissbot_supervisor.core import HUB, Core, Exited, Policy, ProcessSpec, Spawned, Tick
from kissbot_supervisor.observe.events import HOOK_KINDS, event_object, hook_environment
from kissbot_supervisor.observe.http import request_complete, respond
from kissbot_supervisor.observe.metrics import (
    CONTENT_TYPE,
    escape_label_value,
    exposition,
    family_names,
    log_line,
    snapshot,
)
from kissbot_supervisor.protocol import EVENT_KEYS, encode, parse_event

SECRET = "oauth-secret-never-in-metrics"


def status(**bot: Any) -> dict[str, Any]:
    """A STATUS object as the daemon builds it: a hub and two bots."""

    def proc(name: str, **over: Any) -> dict[str, Any]:
        entry = {
            "name": name,
            "state": "running",
            "want": True,
            "pid": 4242,
            "uptime_s": 12.5,
            "restarts": 0,
            "rss_bytes": 10_000_000,
            "last_exit": None,
            "token_state": "valid",
            "reason": None,
            "status_text": None,
        }
        entry.update(over)
        return entry

    return {
        "backend": "native",
        "supervisor": {"pid": 99, "uptime_s": 30.0, "version": "0.1.0", "rss_bytes": 15_000_000},
        "hub": proc(HUB, socket="hub.sock"),
        "bots": [
            {"channel": "el_serda", **proc("el_serda", restarts=3, **bot)},
            {
                "channel": "stopped_one",
                **proc("stopped_one", state="stopped", pid=None, rss_bytes=None, want=False),
            },
        ],
    }


def snap(**bot: Any) -> dict[str, Any]:
    return snapshot(
        status(**bot),
        time=1_700_000_000.0,
        start_time=1_699_999_970.0,
        supervisor_cpu=1.25,
        extras={
            "el_serda": {"cpu_seconds": 2.5, "watchdog_timeouts": 2, "token_expiry": 1.8e9},
            HUB: {"cpu_seconds": 0.5, "watchdog_timeouts": 0, "token_expiry": None},
            "stopped_one": {"cpu_seconds": None, "watchdog_timeouts": 0, "token_expiry": None},
        },
    )


def parsed(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted labels: value}, through the real parser."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def one(
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, proc: str
) -> float:
    return samples[name][(("process", proc),)]


def test_exposition_parses_and_holds_every_figure() -> None:
    text = exposition(snap())
    samples = parsed(text)
    assert one(samples, "kissbot_up", "el_serda") == 1
    assert one(samples, "kissbot_up", "stopped_one") == 0
    assert one(samples, "kissbot_ready", HUB) == 1
    assert one(samples, "kissbot_ready", "stopped_one") == 0
    assert one(samples, "kissbot_restarts_total", "el_serda") == 3
    assert one(samples, "kissbot_watchdog_timeouts_total", "el_serda") == 2
    assert one(samples, "kissbot_memory_bytes", "el_serda") == 10_000_000
    assert one(samples, "kissbot_cpu_seconds_total", "el_serda") == 2.5
    assert one(samples, "kissbot_token_expiry_timestamp_seconds", "el_serda") == 1.8e9
    assert samples["kissbot_supervisor_memory_bytes"][()] == 15_000_000
    assert samples["kissbot_supervisor_cpu_seconds_total"][()] == 1.25
    assert samples["kissbot_supervisor_start_time_seconds"][()] == 1_699_999_970.0
    assert samples["kissbot_supervisor_build_info"] == {
        (("backend", "native"), ("version", "0.1.0")): 1
    }
    # Unknown figures are left out, not reported as 0.
    assert (("process", "stopped_one"),) not in samples["kissbot_memory_bytes"]
    assert (("process", "stopped_one"),) not in samples["kissbot_cpu_seconds_total"]
    assert (("process", HUB),) not in samples["kissbot_token_expiry_timestamp_seconds"]
    assert text.endswith("\n")


def test_a_deliberate_stop_is_told_from_a_failure() -> None:
    # Both are down (kissbot_up 0); only the failed one is still wanted.
    s = snapshot(
        status(state="failed", pid=None, rss_bytes=None),
        time=0.0,
        start_time=0.0,
        supervisor_cpu=None,
        extras={},
    )
    samples = parsed(exposition(s))
    assert one(samples, "kissbot_up", "el_serda") == 0
    assert one(samples, "kissbot_up", "stopped_one") == 0
    assert one(samples, "kissbot_wanted", "el_serda") == 1
    assert one(samples, "kissbot_wanted", "stopped_one") == 0
    assert one(samples, "kissbot_wanted", HUB) == 1
    states = samples["kissbot_state"]
    for proc, current in (("el_serda", "failed"), ("stopped_one", "stopped"), (HUB, "running")):
        mine = {dict(k)["state"]: v for k, v in states.items() if dict(k)["process"] == proc}
        # Every state has its sample, so an alert's series goes 0 -> 1 rather than appear.
        assert set(mine) == {"running", "starting", "stopping", "stopped", "backoff", "failed"}
        assert {st for st, v in mine.items() if v == 1} == {current}, proc


def test_the_state_label_escapes_a_strange_process_name() -> None:
    nasty = 'we\\ird "na\nme'
    s = snapshot(
        {"supervisor": {}, "hub": None, "bots": [{"name": nasty, "state": "backoff"}]},
        time=0.0,
        start_time=0.0,
        supervisor_cpu=None,
        extras={},
    )
    samples = parsed(exposition(s))
    assert samples["kissbot_state"][(("process", nasty), ("state", "backoff"))] == 1
    assert samples["kissbot_wanted"][(("process", nasty),)] == 0


def test_failing_alike_is_a_supervisor_gauge_and_in_the_log() -> None:
    quiet = snapshot(status(), time=0.0, start_time=0.0, supervisor_cpu=None, extras={})
    assert parsed(exposition(quiet))["kissbot_supervisor_failing_alike_bots"][()] == 0
    outage = snapshot(
        status(), time=0.0, start_time=0.0, supervisor_cpu=None, extras={}, failing_alike=12
    )
    assert parsed(exposition(outage))["kissbot_supervisor_failing_alike_bots"][()] == 12
    assert json.loads(log_line(outage))["supervisor"]["failing_alike"] == 12


OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_family_names_are_what_the_exposition_holds() -> None:
    # The list the alert rules and the dashboard are checked against (docs/prometheus/).
    shown = [f.name for f in text_string_to_metric_families(exposition(snap()))]
    # The parser drops the _total of a counter family's name.
    assert [n.removesuffix("_total") for n in family_names()] == shown


def test_every_metric_is_documented_in_operations_md() -> None:
    text = OPERATIONS.read_text()
    for name in family_names():
        short = "`_" + name.removeprefix("kissbot_supervisor_") + "`"
        assert f"`{name}" in text or (name.startswith("kissbot_supervisor_") and short in text), (
            f"{name} is exported but not in the metrics table of docs/operations.md"
        )


def test_every_family_has_help_and_type_and_the_types_are_right() -> None:
    families = {f.name: f for f in text_string_to_metric_families(exposition(snap()))}
    assert families["kissbot_restarts"].type == "counter"
    assert families["kissbot_cpu_seconds"].type == "counter"
    assert families["kissbot_up"].type == "gauge"
    for family in families.values():
        assert family.documentation, family.name
        assert family.type in ("counter", "gauge"), family.name


def test_label_values_are_escaped_for_the_parser() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    nasty = 'we\\ird "na\nme'
    s = snapshot(
        {"backend": "x", "supervisor": {"version": nasty}, "hub": None, "bots": []},
        time=0.0,
        start_time=0.0,
        supervisor_cpu=None,
        extras={},
    )
    samples = parsed(exposition(s))
    assert samples["kissbot_supervisor_build_info"] == {(("backend", "x"), ("version", nasty)): 1}


def test_a_fleet_with_no_process_still_gives_a_valid_exposition() -> None:
    s = snapshot({"supervisor": {}}, time=0.0, start_time=5.0, supervisor_cpu=None, extras={})
    samples = parsed(exposition(s))
    assert "kissbot_up" not in samples
    assert samples["kissbot_supervisor_start_time_seconds"][()] == 5.0


def test_log_line_is_one_json_object_with_the_per_process_figures() -> None:
    line = log_line(snap(last_exit="killed by SIGKILL"))
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    obj = json.loads(line)
    assert obj["time"] == 1_700_000_000.0
    assert obj["supervisor"]["cpu_seconds"] == 1.25
    bot = next(p for p in obj["processes"] if p["name"] == "el_serda")
    assert bot["state"] == "running"
    assert bot["pid"] == 4242
    assert bot["uptime_s"] == 12.5
    assert bot["restarts"] == 3
    assert bot["rss_bytes"] == 10_000_000
    assert bot["cpu_seconds"] == 2.5
    assert bot["last_exit"] == "killed by SIGKILL"


def test_no_token_value_in_a_snapshot_even_if_status_carried_one() -> None:
    # A snapshot keeps only its own keys: a stray secret in STATUS goes nowhere.
    st = status(access_token=SECRET, reason=SECRET)
    s = snapshot(st, time=0.0, start_time=0.0, supervisor_cpu=None, extras={})
    assert SECRET not in exposition(s)
    assert SECRET not in log_line(s).decode()


# --- events -------------------------------------------------------------------------


def _core() -> Core:
    specs = [ProcessSpec(name="el_serda", argv=("bot",), ready="none")]
    return Core(specs, Policy(delay_sec=1.0))


def test_event_object_has_the_protocol_keys_and_the_state_after_the_note() -> None:
    core = _core()
    core.handle(Tick(), 0.0)
    core.handle(Spawned("el_serda", 100), 0.0)
    event = event_object(core, "el_serda", "ready", "ready", 1234.5)
    assert tuple(event) == EVENT_KEYS
    assert event == {
        "time": 1234.5,
        "name": "el_serda",
        "kind": "ready",
        "message": "ready",
        "state": "running",
        "pid": 100,
        "restarts": 0,
    }
    # It survives the wire and the client's parser.
    assert parse_event(encode({"event": event})) == event
    sup = event_object(core, "supervisor", "shutdown", "stopping", 1.0)
    assert (sup["state"], sup["pid"], sup["restarts"]) == (None, None, None)


def test_hook_environment_describes_the_failure_and_nothing_else() -> None:
    core = _core()
    core.handle(Tick(), 0.0)
    core.handle(Spawned("el_serda", 100), 0.0)
    actions = core.handle(Exited("el_serda", 100, signal=int(signal.SIGKILL)), 5.0)
    kinds = [a.kind for a in actions if hasattr(a, "kind")]
    assert "backoff" in kinds
    assert "backoff" in HOOK_KINDS
    assert "exited" not in HOOK_KINDS
    inherited = {"PATH": "/usr/bin:/bin", "LANG": "en_US.UTF-8", "KISSBOT_TOKEN": SECRET}
    env = hook_environment(core, "el_serda", "backoff", "crashed", Path("/srv/kb"), inherited)
    assert env == {
        "PATH": "/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "KISSBOT_EVENT": "backoff",
        "KISSBOT_NAME": "el_serda",
        "KISSBOT_CHANNEL": "el_serda",
        "KISSBOT_REASON": "crashed",
        "KISSBOT_STATE": "backoff",
        "KISSBOT_PID": "100",
        "KISSBOT_RESTARTS": "0",
        "KISSBOT_LAST_EXIT": "killed by SIGKILL",
        "KISSBOT_LAST_LINE": "",
        "KISSBOT_WORKDIR": "/srv/kb",
    }
    hub = hook_environment(core, HUB, "parked", "x", Path("/srv/kb"), {})
    assert hub["KISSBOT_CHANNEL"] == ""
    assert hub["PATH"]


# --- the listen setting ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9101", ("inet", "127.0.0.1", 9101)),
        ("[::1]:9101", ("inet6", "::1", 9101)),
        ("0.0.0.0:80", ("inet", "0.0.0.0", 80)),
        ("unix:/run/kb/metrics.sock", ("unix", "/run/kb/metrics.sock", 0)),
    ],
)
def test_listen_addresses(value: str, expected: tuple[str, str, int]) -> None:
    assert split_listen(value) == expected
    assert optional_listen(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "localhost:9101",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        "::1:9101",
        "unix:relative.sock",
        "[::1]",
        9101,
        "1.2.3:80",
    ],
)
def test_bad_listen_addresses_are_refused_with_the_rule(value: object) -> None:
    with pytest.raises(SettingValueError, match=r"listen address|unix:/"):
        optional_listen(value)


# --- the HTTP responder ------------------------------------------------------------------


def _split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    first, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return first, headers, body


def test_get_metrics_serves_the_exposition() -> None:
    text = exposition(snap())
    head = b"GET /metrics?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
    assert request_complete(head)
    first, headers, body = _split(respond(head, lambda: text))
    assert first == "HTTP/1.0 200 OK"
    assert headers["content-type"] == CONTENT_TYPE
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    assert body.decode() == text


def test_head_has_headers_only() -> None:
    first, headers, body = _split(respond(b"HEAD /metrics HTTP/1.0\n\n", lambda: "x 1\n"))
    assert first == "HTTP/1.0 200 OK"
    assert body == b""
    assert headers["content-length"] == "4"


@pytest.mark.parametrize(
    ("head", "code"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "404"),
        (b"GET /metrics/x HTTP/1.1\r\n\r\n", "404"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", "405"),
        (b"DELETE /x HTTP/1.1\r\n\r\n", "405"),
        (b"GET /metrics\r\n\r\n", "400"),
        (b"garbage\r\n\r\n", "400"),
        (b"GET metrics HTTP/1.1\r\n\r\n", "400"),
    ],
)
def test_other_requests_get_their_error(head: bytes, code: str) -> None:
    called: list[int] = []

    def metrics() -> str:
        called.append(1)
        return "x 1\n"

    first, headers, _ = _split(respond(head, metrics))
    assert first.split()[1] == code
    assert not called  # the metrics are only gathered for a request that gets them
    if code == "405":
        assert headers["allow"] == "GET, HEAD"


def test_a_request_head_is_complete_only_at_its_blank_line() -> None:
    assert not request_complete(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    assert request_complete(b"GET /metrics HTTP/1.1\nHost: x\n\n")
