"""The alert rules and the Grafana dashboard shipped in docs/prometheus/.

Both must parse, and every metric their queries use must be one the supervisor
exports: the list comes from the code (``metrics.family_names``), so renaming
a metric without updating them fails here. Where Debian's ``prometheus``
package supplies ``promtool``, the rules also pass ``promtool check rules``,
and ``promtool test rules`` plays fleets through them: a bot that crashed
raises an alert, the same bot stopped on purpose does not. Without promtool
those two tests are skipped (they never fetch anything).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kissbot_supervisor.observe.metrics import family_names

DOCS = Path(__file__).resolve().parents[2] / "docs" / "prometheus"
RULES = DOCS / "kissbot-alerts.yml"
DASHBOARD = DOCS / "kissbot-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")

# Prometheus's own metric for a scrape, which the supervisor-down alert needs.
PROMETHEUS_OWN = {"up"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
KEYWORDS |= {"group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (a small lexer, enough for our queries)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, Grafana's $__rate_interval included
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", text):
        follows = text[match.end() :].lstrip()
        if follows.startswith("(") or match.group().lower() in KEYWORDS:
            continue  # a function or an aggregation, or an operator
        found.add(match.group())
    return found


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs(node: object) -> Iterator[str]:
    """Every query of the dashboard: panel targets and the template variables' queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


def test_the_lexer_finds_metrics_and_nothing_else() -> None:
    expr = (
        'count by (job, instance) (kissbot_ready{process!="hub",x="a b"} == 0 and '
        "kissbot_wanted == 1) / ignoring (state) sum(rate(kissbot_cpu_seconds_total"
        "[$__rate_interval] offset 5m)) > 0.2 unless up == bool 1e9"
    )
    assert metric_names(expr) == {
        "kissbot_ready",
        "kissbot_wanted",
        "kissbot_cpu_seconds_total",
        "up",
    }
    assert metric_names('label_values(kissbot_up{instance=~"$instance"}, process)') == {
        "kissbot_up",
        "process",  # the label argument; the dashboard check drops it
    }


def test_the_alert_rules_use_only_exported_metrics_and_say_what_to_do() -> None:
    exported = set(family_names()) | PROMETHEUS_OWN
    alerts = rules()
    assert len(alerts) >= 8
    used: set[str] = set()
    for rule in alerts:
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']} uses {sorted(names - exported)}"
        used |= names
        assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
    # The metrics that tell a deliberate stop from a failure are the point of the rules.
    assert {"kissbot_wanted", "kissbot_state", "kissbot_supervisor_failing_alike_bots"} <= used


def test_the_dashboard_is_valid_json_on_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"]
    assert dash["title"]
    exported = set(family_names())
    exprs = list(dashboard_exprs(dash))
    assert len(exprs) >= 10
    used: set[str] = set()
    for expr in exprs:
        # label_values(METRIC{...}, LABEL): the metric is all but the last argument.
        query = (
            expr.removeprefix("label_values(").rsplit(",", 1)[0]
            if "label_values(" in expr
            else expr
        )
        names = metric_names(query)
        assert names, expr
        assert names <= exported, f"the dashboard uses {sorted(names - exported)} in {expr}"
        used |= names
    # Each panel has a unique id and a place; each query names the data source variable.
    ids = [panel["id"] for panel in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    # Every per-process figure the supervisor exports has a panel.
    assert exported - used <= {"kissbot_up", "kissbot_supervisor_start_time_seconds"} | {
        "kissbot_supervisor_build_info"
    }


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- the rules played through promtool: who is alerted, and who is left alone ----------

JOB = {"job": "kissbot", "instance": "host:9101"}


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in {**JOB, **labels}.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def bot(name: str, *, ready: str, wanted: str, restarts: str = "0x30") -> list[dict[str, str]]:
    """A process's series; it has a PID (kissbot_up) exactly when it is ready, here."""
    return [
        series("kissbot_up", ready, process=name),
        series("kissbot_ready", ready, process=name),
        series("kissbot_wanted", wanted, process=name),
        series("kissbot_restarts_total", restarts, process=name),
    ]


def supervisor(up: str = "1x30", alike: str = "0x30") -> list[dict[str, str]]:
    return [
        {"series": 'up{job="kissbot",instance="host:9101"}', "values": up},
        series("kissbot_supervisor_build_info", "1x30", version="0.1.0", backend="native"),
        series("kissbot_supervisor_failing_alike_bots", alike),
    ]


def fired(alerts: dict[str, list[dict[str, str]]], at: str = "20m") -> list[dict[str, Any]]:
    """promtool's expectations at ``at``: every alert of the rules, firing or not."""
    out = []
    for rule in rules():
        expected = alerts.get(rule["alert"], [])
        exp = [
            {"exp_labels": {"severity": rule["labels"]["severity"], **labels}}
            for labels in expected
        ]
        out.append({"eval_time": at, "alertname": rule["alert"], "exp_alerts": exp})
    return out


def on(name: str) -> dict[str, str]:
    return {**JOB, "process": name}


STEADY = [
    s
    for n in ("steady_a", "steady_b", "steady_c", "hub")
    for s in bot(n, ready="1x30", wanted="1x30")
]

SCENARIOS: dict[str, dict[str, Any]] = {
    "one crashed and parked, one stopped on purpose, one flapping": {
        "input_series": [
            *supervisor(),
            *STEADY,
            *bot("crashed_one", ready="0x30", wanted="1x30"),
            series("kissbot_state", "0 0 1x28", process="crashed_one", state="failed"),
            *bot("stopped_one", ready="0x30", wanted="0x30"),
            series("kissbot_state", "0x30", process="stopped_one", state="failed"),
            *bot("flappy_one", ready="1x30", wanted="1x30", restarts="0+1x30"),
            series("kissbot_watchdog_timeouts_total", "0x10 1x20", process="flappy_one"),
            series("kissbot_token_expiry_timestamp_seconds", "60x30", process="steady_a"),
            series("kissbot_token_expiry_timestamp_seconds", "1e10x30", process="steady_b"),
        ],
        "alerts": {
            "KissbotBotDownWhileWanted": [on("crashed_one")],
            "KissbotBotParked": [{**on("crashed_one"), "state": "failed"}],
            "KissbotBotRestartingOften": [on("flappy_one")],
            "KissbotWatchdogTimeouts": [on("flappy_one")],
            "KissbotTokenExpired": [on("steady_a")],
        },
    },
    "stop-all: every bot stopped on purpose, nothing to page about": {
        "input_series": [
            *supervisor(),
            *bot("hub", ready="1x30", wanted="1x30"),
            *(
                s
                for n in ("a_bot", "b_bot", "c_bot")
                for s in bot(n, ready="1x5 0x25", wanted="1x5 0x25")
            ),
            *(
                series("kissbot_state", "0x30", process=n, state="failed")
                for n in ("a_bot", "b_bot", "c_bot")
            ),
        ],
        "alerts": {},
    },
    "an outage: half the fleet down alike": {
        "input_series": [
            *supervisor(alike="0 0 3x28"),
            *STEADY,
            *(s for n in ("x_bot", "y_bot", "z_bot") for s in bot(n, ready="0x30", wanted="1x30")),
        ],
        "alerts": {
            "KissbotBotsFailingAlike": [JOB],
            "KissbotManyBotsDown": [JOB],
            "KissbotBotDownWhileWanted": [on("x_bot"), on("y_bot"), on("z_bot")],
        },
    },
    "the supervisor is gone": {
        "input_series": [{"series": 'up{job="kissbot",instance="host:9101"}', "values": "0x30"}],
        "alerts": {
            "KissbotSupervisorDown": [JOB],
            "KissbotSupervisorAbsent": [{"job": "kissbot"}],
        },
    },
}


@needs_promtool
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_promtool_plays_fleets_through_the_rules(scenario: str, tmp_path: Path) -> None:
    # The wording of the annotations is for people; the test holds the expressions
    # and labels, so the rules are copied without their annotations.
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc))
    case = SCENARIOS[scenario]
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": case["input_series"],
                "alert_rule_test": fired(case["alerts"]),
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
