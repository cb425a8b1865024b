"""Events, metrics (command, log, HTTP) and the on_failure hook on a live demo fleet (native)."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures.kissbot_db import KissbotDb, write_key_file
from kissbot_supervisor.daemon.control import MAX_PENDING_OUT, ControlServer
from kissbot_supervisor.observe.http import MAX_CLIENTS, MAX_REQUEST, MetricsHttpServer
from kissbot_supervisor.protocol import EVENT_KEYS, parse_event
from kissbot_supervisor.runtime.log import Log
from kissbot_supervisor.runtime.loop import Loop
from linewatch import wait_until

from .conftest import StartFleet
from .harness import TIMEOUT, Supervisor, fleet_config, write_config

SECRET = "oauth-access-token-9d1e77c0"
REFRESH = "oauth-refresh-token-5b2a41f8"


class Events:
    """An ``events`` subscription on the control socket, read line by line."""

    def __init__(self, sup: Supervisor) -> None:
        sup.wait_for(r"supervisor: kissbot-supervisor .* control socket")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(str(sup.control))
        self.sock.sendall(b'{"cmd": "events"}\n')
        self.file = self.sock.makefile("rb")
        assert json.loads(self.file.readline()) == {"ok": True, "subscribed": True}
        self.seen: list[dict[str, Any]] = []

    def next(self) -> dict[str, Any]:
        line = self.file.readline()
        assert line, "the supervisor closed the events stream"
        event = parse_event(line)
        assert tuple(event) == EVENT_KEYS
        self.seen.append(event)
        return event

    def until(self, name: str, kind: str) -> dict[str, Any]:
        """Events in order until one of ``name`` and ``kind`` (the socket timeout bounds it)."""
        while True:
            event = self.next()
            if event["name"] == name and event["kind"] == kind:
                return event

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def events() -> Iterator[list[Events]]:
    opened: list[Events] = []
    yield opened
    for e in opened:
        e.close()


def samples(text: str) -> dict[tuple[str, str], float]:
    """(sample name, process label) -> value, through the real Prometheus parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, s.labels.get("process", ""))] = s.value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class UnixHandler(urllib.request.AbstractHTTPHandler):
    """urllib over a Unix socket: ``unix://`` URLs whose host part is ignored."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def unix_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(lambda host, **kw: UnixHTTPConnection(self.path), req)

    unix_request = urllib.request.AbstractHTTPHandler.do_request_


def test_events_report_a_crash_and_a_restart(start_fleet: StartFleet, events: list[Events]) -> None:
    sup = start_fleet(fleet_config(["crash_me", "steady_one"]))
    sup.wait_for(r"crash_me: ready")
    sup.wait_for(r"steady_one: ready")
    stream = Events(sup)
    events.append(stream)
    pid = sup.bot("crash_me")["pid"]
    os.kill(pid, signal.SIGKILL)
    exited = stream.until("crash_me", "exited")
    assert exited["message"] == "killed by SIGKILL"
    assert exited["pid"] is None
    assert exited["state"] == "backoff"
    backoff = stream.next()
    assert (backoff["name"], backoff["kind"]) == ("crash_me", "backoff")
    started = stream.until("crash_me", "started")
    assert started["pid"] not in (None, pid)
    assert started["restarts"] == 1
    ready = stream.until("crash_me", "ready")
    assert ready["state"] == "running"
    assert ready["pid"] == started["pid"]
    # A restart asked for by an operator: the command, the exit, the new process.
    assert sup.ctl("restart", "steady_one").returncode == 0
    command = stream.until("steady_one", "command")
    assert command["message"] == "restart requested"
    assert stream.until("steady_one", "exited")["message"].endswith("starting again")
    assert stream.until("steady_one", "ready")["restarts"] == 1
    assert all(isinstance(e["time"], float) for e in stream.seen)
    # The subscription carries nothing else, and other clients are served meanwhile.
    assert sup.status()["bots"][1]["restarts"] == 1


def test_metrics_command_log_and_http_listener(start_fleet: StartFleet, tmp_path: Path) -> None:
    port = free_port()
    doc = fleet_config(
        ["metric_one", "metric_two"],
        supervisor={
            "metrics": {"path": "metrics.jsonl", "interval_sec": 1, "listen": f"127.0.0.1:{port}"}
        },
    )
    sup = start_fleet(doc)
    sup.wait_for(r"metric_one: ready")
    sup.wait_for(r"metric_two: ready")
    pid = sup.bot("metric_one")["pid"]
    mark = sup.mark()
    os.kill(pid, signal.SIGKILL)
    sup.wait_for(r"metric_one: ready", since=mark)

    response = sup.request({"cmd": "metrics"})
    assert response["ok"] is True
    got = samples(response["metrics"])
    assert got[("kissbot_up", "metric_one")] == 1
    assert got[("kissbot_ready", "metric_two")] == 1
    assert got[("kissbot_restarts_total", "metric_one")] == 1
    assert got[("kissbot_restarts_total", "metric_two")] == 0
    assert got[("kissbot_watchdog_timeouts_total", "metric_one")] == 0
    assert got[("kissbot_memory_bytes", "metric_one")] > 0
    assert ("kissbot_cpu_seconds_total", "metric_two") in got
    assert got[("kissbot_supervisor_memory_bytes", "")] > 0
    assert got[("kissbot_supervisor_start_time_seconds", "")] > 1e9
    assert got[("kissbot_supervisor_build_info", "")] == 1
    # YAML mode without tokens: no expiry is known, so there is no sample.
    assert ("kissbot_token_expiry_timestamp_seconds", "metric_one") not in got

    # The same text over HTTP, and the errors.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert samples(r.read().decode())[("kissbot_up", "metric_two")] == 1
    with pytest.raises(urllib.error.HTTPError) as not_found:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=TIMEOUT)
    assert not_found.value.code == 404
    not_found.value.close()
    post = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as not_allowed:
        urllib.request.urlopen(post, timeout=TIMEOUT)
    assert not_allowed.value.code == 405
    not_allowed.value.close()

    # The log: one JSON object per interval; a removed (rotated) file comes back.
    log = tmp_path / "metrics.jsonl"
    wait_until(lambda: log.exists() and log.read_bytes().count(b"\n") >= 2, what="2 log lines")
    record = json.loads(log.read_bytes().splitlines()[-1])
    procs = {p["name"]: p for p in record["processes"]}
    assert procs["metric_one"]["restarts"] == 1
    assert procs["metric_one"]["last_exit"] == "killed by SIGKILL"
    assert procs["metric_two"]["state"] == "running"
    assert procs["metric_two"]["rss_bytes"] > 0
    assert record["supervisor"]["pid"] == sup.proc.pid
    log.rename(tmp_path / "metrics.jsonl.1")
    wait_until(log.exists, what="the metrics log written again after its rotation")

    # Reload: the listener moves to a Unix socket and the log stops.
    sock_path = tmp_path / "run" / "metrics.sock"
    doc["supervisor"]["metrics"] = {"listen": f"unix:{sock_path}"}
    write_config(tmp_path, doc)
    mark = sup.mark()
    assert sup.request({"cmd": "reload"})["ok"] is True
    sup.wait_for(r"supervisor: reloaded", since=mark)
    assert stat.S_ISSOCK(sock_path.stat().st_mode)
    opener = urllib.request.build_opener(UnixHandler(str(sock_path)))
    with opener.open("unix://localhost/metrics", timeout=TIMEOUT) as r:
        assert r.status == 200
        assert samples(r.read().decode())[("kissbot_ready", "metric_one")] == 1
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


def test_a_stopped_bot_is_not_wanted_and_a_running_one_is(start_fleet: StartFleet) -> None:
    # What an "up == 0" alert needs to leave a deliberate stop alone.
    sup = start_fleet(fleet_config(["kept_one", "halted_one"]))
    sup.wait_for(r"kept_one: ready")
    sup.wait_for(r"halted_one: ready")
    assert sup.ctl("stop", "halted_one").returncode == 0
    text = sup.request({"cmd": "metrics"})["metrics"]
    got = samples(text)
    assert got[("kissbot_up", "halted_one")] == 0
    assert got[("kissbot_wanted", "halted_one")] == 0
    assert got[("kissbot_wanted", "kept_one")] == 1
    current = {
        (s.labels["process"], s.labels["state"])
        for family in text_string_to_metric_families(text)
        if family.name == "kissbot_state"
        for s in family.samples
        if s.value == 1
    }
    assert {("halted_one", "stopped"), ("kept_one", "running")} <= current
    assert got[("kissbot_supervisor_failing_alike_bots", "")] == 0


def test_an_unwritable_metrics_log_is_reported_once_and_supervision_goes_on(
    start_fleet: StartFleet,
) -> None:
    doc = fleet_config(
        ["log_bot"], supervisor={"metrics": {"path": "no/such/dir/m.jsonl", "interval_sec": 1}}
    )
    sup = start_fleet(doc)
    sup.wait_for(r"metrics: cannot write the metrics log .*m\.jsonl: No such file or directory")
    sup.wait_for(r"log_bot: ready")
    mark = sup.mark()
    pid = sup.bot("log_bot")["pid"]
    os.kill(pid, signal.SIGKILL)
    sup.wait_for(r"log_bot: ready", since=mark)
    assert len(sup.seen(r"cannot write the metrics log")) == 1


HOOK = """#!/bin/sh
mkdir -p hooks
env > "hooks/$KISSBOT_EVENT.$KISSBOT_NAME.tmp"
mv "hooks/$KISSBOT_EVENT.$KISSBOT_NAME.tmp" "hooks/$KISSBOT_EVENT.$KISSBOT_NAME.env"
echo "hook ran for $KISSBOT_NAME"
"""


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_on_failure_hook_runs_with_its_environment_and_no_secret(
    start_fleet: StartFleet, tmp_path: Path, events: list[Events]
) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    doc = fleet_config(
        ["hooked_bot", "quiet_bot"],
        supervisor={"on_failure": [str(hook)], "restart": {"give_up_after": 2}},
    )
    # YAML token mode: the token sits in the very config the supervisor reads.
    doc["twitch"]["tokens"] = {
        "serda_bot": {"user_id": "1001", "access_token": SECRET, "refresh_token": REFRESH}
    }
    sup = start_fleet(doc)
    sup.wait_for(r"hooked_bot: ready")
    stream = Events(sup)
    events.append(stream)
    first = sup.bot("hooked_bot")["pid"]
    os.kill(first, signal.SIGKILL)
    sup.wait_for(r"on_failure: hooked_bot: hook ran for hooked_bot")
    env = _env_file(tmp_path / "hooks" / "backoff.hooked_bot.env")
    assert env["KISSBOT_EVENT"] == "backoff"
    assert env["KISSBOT_NAME"] == env["KISSBOT_CHANNEL"] == "hooked_bot"
    assert env["KISSBOT_PID"] == str(first)
    assert env["KISSBOT_STATE"] == "backoff"
    assert env["KISSBOT_RESTARTS"] == "0"
    assert env["KISSBOT_REASON"].startswith("killed by SIGKILL; restarting in")
    assert env["KISSBOT_LAST_EXIT"] == "killed by SIGKILL"
    # Its own last output line, quoted, as in the log file the supervisor keeps of it.
    last_line = env["KISSBOT_LAST_LINE"]
    assert last_line.startswith('"'), last_line
    assert last_line.endswith('"'), last_line
    log = (tmp_path / "logs" / "supervisor" / "hooked_bot.log").read_text()
    assert last_line.strip('"') in log
    assert Path(env["KISSBOT_WORKDIR"]) == tmp_path.resolve()
    assert env["PATH"]
    # Built from scratch: nothing of the supervisor's own environment but PATH and LANG.
    assert "PYTEST_CURRENT_TEST" not in env
    assert "NOTIFY_SOCKET" not in env
    assert not [k for k in env if k.startswith("KISSBOT_") and "TOKEN" in k]

    # The second failure within the window parks it: the hook runs again.
    second = stream.until("hooked_bot", "started")["pid"]
    stream.until("hooked_bot", "ready")
    os.kill(second, signal.SIGKILL)
    parked = tmp_path / "hooks" / "parked.hooked_bot.env"
    wait_until(parked.exists, what="the hook's run for the parking")
    assert _env_file(parked)["KISSBOT_STATE"] == "failed"
    assert _env_file(parked)["KISSBOT_PID"] == str(second)
    # A stop asked for by an operator is no failure.
    assert sup.ctl("stop", "quiet_bot").returncode == 0
    assert not list((tmp_path / "hooks").glob("*quiet_bot*"))

    # No secret anywhere the supervisor writes or says.
    for path in (tmp_path / "hooks").iterdir():
        text = path.read_text()
        assert SECRET not in text
        assert REFRESH not in text
    outputs = [
        "\n".join(sup.lines),
        sup.request({"cmd": "metrics"})["metrics"],
        json.dumps(stream.seen),
    ]
    for text in outputs:
        assert SECRET not in text
        assert REFRESH not in text


def test_hooks_are_bounded_in_number_and_time(start_fleet: StartFleet, tmp_path: Path) -> None:
    names = ["slow_hook_a", "slow_hook_b", "slow_hook_c", "slow_hook_d", "slow_hook_e"]
    doc = fleet_config(
        names,
        supervisor={
            "on_failure": ["/bin/sh", "-c", "echo begun; exec sleep 600"],
            "on_failure_timeout_sec": 5,
        },
    )
    sup = start_fleet(doc)
    for name in names:
        sup.wait_for(rf"{name}: ready")
    pids = [sup.bot(name)["pid"] for name in names]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    sup.wait_for(r"on_failure: slow_hook_\w: not run, 4 runs are still going")
    for _ in range(4):
        sup.wait_for(r"on_failure: slow_hook_\w: begun")
    wait_until(
        lambda: len(sup.seen(r"on_failure: slow_hook_\w: killed by SIGKILL")) == 4,
        timeout=TIMEOUT + 10,
        what="four hook runs killed after their timeout",
    )
    assert len(sup.seen(r"still running after 5 s; killing it")) == 4
    assert len(sup.seen(r"on_failure: slow_hook_\w: begun")) == 4


def test_a_subscriber_that_does_not_read_is_dropped_without_blocking(tmp_path: Path) -> None:
    """The control server in this process: a real loop, a real socket, a stuck reader."""
    loop = Loop()
    log = io.StringIO()
    server = ControlServer(loop, tmp_path / "c.sock", lambda req, reply: None, Log(log))
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(tmp_path / "c.sock"))
        client.sendall(b'{"cmd":"events"}\n')
        while not server.subscribers:
            loop.run_once()
        event = {k: "x" * 1000 for k in EVENT_KEYS}
        sent = 0
        while server.subscribers:
            server.broadcast({"event": event})  # never blocks: the client reads nothing
            sent += 1
            assert sent * 8000 < 4 * MAX_PENDING_OUT
        said = log.getvalue().splitlines()
        assert len(said) == 1
        assert "control: dropped an events subscriber" in said[0]
        # The client sees its answer, then events, then the end.
        client.settimeout(TIMEOUT)
        assert client.recv(64).startswith(b'{"ok":true,"subscribed":true}\n')
    finally:
        client.close()
        server.close()
        loop.close()


def test_token_expiry_is_a_metric_in_db_mode_and_the_token_is_not(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    key = write_key_file(tmp_path)
    db = KissbotDb.create(tmp_path / "kissbot.db", key=key)
    expires = round(time.time()) + 86_400.0
    db.add_account("serda_bot", "1001", SECRET, expires_at=expires)
    sup = start_fleet(fleet_config(["expiry_bot"], supervisor={"use_db": True}))
    sup.wait_for(r"expiry_bot: ready")
    text = sup.request({"cmd": "metrics"})["metrics"]
    assert samples(text)[("kissbot_token_expiry_timestamp_seconds", "expiry_bot")] == expires
    assert SECRET not in text


def test_http_listener_bounds_request_size_and_clients(tmp_path: Path) -> None:
    """The listener in this process: a real loop and real sockets, driven step by step."""
    loop = Loop()
    path = tmp_path / "m.sock"
    server = MetricsHttpServer(loop, f"unix:{path}", lambda: "up 1\n", Log(io.StringIO()))
    clients: list[socket.socket] = []

    def connect() -> socket.socket:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(TIMEOUT)
        c.connect(str(path))
        clients.append(c)
        return c

    def answer(c: socket.socket) -> bytes:
        c.setblocking(False)
        data = b""
        while True:
            try:
                chunk = c.recv(65536)
            except BlockingIOError:
                loop.run_once()  # the server's turn (it has work: this client waits)
                continue
            if not chunk:
                return data
            data += chunk

    try:
        big = connect()
        big.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (MAX_REQUEST + 10))
        assert answer(big).startswith(b"HTTP/1.0 431 ")
        idle = [connect() for _ in range(MAX_CLIENTS)]  # each holds a slot, sends nothing
        while server.connections < MAX_CLIENTS:
            loop.run_once()
        # A slowloris holds every slot: a scraper is served all the same, and the
        # connection waiting longest for its request made room for it.
        scraper = connect()
        scraper.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert answer(scraper).endswith(b"\r\n\r\nup 1\n")
        assert answer(idle[0]) == b""  # the oldest: closed
        assert server.connections == MAX_CLIENTS - 1
        for c in idle:
            c.close()
        while server.connections:  # each hang-up frees its slot
            loop.run_once()
        ok = connect()
        ok.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert answer(ok).endswith(b"\r\n\r\nup 1\n")
    finally:
        for c in clients:
            c.close()
        server.close()
        loop.close()
    assert not path.exists()
