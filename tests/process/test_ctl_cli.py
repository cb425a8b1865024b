"""Every ``kissbotctl`` subcommand through the installed entry point, against a real demo fleet.

The supervisor runs the native backend with a hub and two demo bots; each
test drives it with ``.venv/bin/kissbotctl`` as an operator would, parses the
``--json`` outputs and checks the one-line errors and exit codes. Colour is
checked on a real pseudo-terminal; completion by running bash (and zsh, when
installed) on the generated script.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kissbot_supervisor.protocol import EVENT_KEYS
from linewatch import EOF_MARK, LineWatcher

from .conftest import StartFleet
from .harness import KISSBOTCTL, TIMEOUT, Supervisor, fleet_config, write_config
from .ptyexpect import PtyProgram, plain

NOBODY = 65534
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RESULT_KEYS = ["name", "ok", "result", "pid", "state", "message"]


def ctl_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KISSBOT_CONTROL_SOCKET", "NO_COLOR", "COLUMNS", "TERM"}
    }
    env.update(extra)
    return env


def ctl(sup: Supervisor, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """kissbotctl on the fleet's socket, output not a terminal."""
    return subprocess.run(
        [KISSBOTCTL, "--socket", str(sup.control), *args],
        env=ctl_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kissbotctl: "), lines[0]
    assert proc.stdout == ""
    return lines[0]


@pytest.fixture
def fleet(start_fleet: StartFleet) -> Supervisor:
    sup = start_fleet(fleet_config(["el_serda", "morthy"], hub=True))
    for name in ("hub", "el_serda", "morthy"):
        sup.wait_for(rf"{name}: ready")
    return sup


class Stream:
    """A long-running ``kissbotctl`` (events), its stdout lines collected as they come."""

    def __init__(self, sup: Supervisor, *args: str) -> None:
        self.proc = subprocess.Popen(
            [KISSBOTCTL, "--socket", str(sup.control), *args],
            env=ctl_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.out = LineWatcher(self.proc.stdout, "kissbotctl events", TIMEOUT)

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait(TIMEOUT)
        self.out.join()
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def streams() -> Iterator[list[Stream]]:
    started: list[Stream] = []
    yield started
    for stream in started:
        stream.close()


# --- status, start, stop, restart, reload -------------------------------------


def test_status_json_and_human(fleet: Supervisor) -> None:
    result = ctl(fleet, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert [b["channel"] for b in status["bots"]] == ["el_serda", "morthy"]
    assert status["hub"]["state"] == "running"

    human = ctl(fleet, "status")
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert "KissBot supervisor" in lines[0]
    assert "2/2 bots running" in lines
    assert re.search(r"^el_serda +running +\d+ +\d\d:\d\d:\d\d +0 +[\d.]+[KMG]", human.stdout, re.M)
    assert "\x1b" not in human.stdout  # not a terminal
    assert all(len(line) <= 80 for line in lines)

    one = json.loads(ctl(fleet, "status", "morthy", "--json").stdout)
    assert [b["channel"] for b in one["bots"]] == ["morthy"]


def test_stop_start_restart_json(fleet: Supervisor) -> None:
    stop = ctl(fleet, "stop", "morthy", "--json")
    assert stop.returncode == 0, stop.stderr
    stopped = json.loads(stop.stdout)
    assert stopped["ok"] is True
    assert [list(r) for r in stopped["results"]] == [RESULT_KEYS]
    assert stopped["results"][0]["name"] == "morthy"
    assert stopped["results"][0]["result"] == "stopped"
    assert stopped["results"][0]["state"] == "stopped"
    assert ctl(fleet, "status").returncode == 0  # stopped on purpose: not wanted

    start = json.loads(ctl(fleet, "start", "morthy", "--json").stdout)
    assert start["ok"] is True
    assert start["results"][0]["result"] == "started"
    assert start["results"][0]["state"] == "running"
    new_pid = start["results"][0]["pid"]
    assert fleet.bot("morthy")["pid"] == new_pid

    restart = ctl(fleet, "restart", "hub", "el_serda", "--json")
    assert restart.returncode == 0, restart.stderr
    results = {r["name"]: r for r in json.loads(restart.stdout)["results"]}
    assert set(results) == {"hub", "el_serda"}
    assert all(r["ok"] and r["result"] == "restarted" for r in results.values())

    human = ctl(fleet, "restart", "morthy")
    assert human.returncode == 0, human.stderr
    assert re.fullmatch(r"morthy: restarted \(PID \d+\)\n", human.stdout)


def test_reload_json_names_the_changes(fleet: Supervisor) -> None:
    write_config(fleet.workdir, fleet_config(["el_serda", "morthy", "newcomer"], hub=True))
    result = ctl(fleet, "reload", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "ok": True,
        "changes": {"added": ["newcomer"], "removed": [], "changed": []},
    }
    fleet.wait_for(r"newcomer: ready")
    write_config(fleet.workdir, fleet_config(["el_serda", "morthy"], hub=True))
    human = ctl(fleet, "reload")
    assert human.stdout == "reloaded: added none; removed newcomer; changed none\n"


@pytest.mark.parametrize(
    "args",
    [
        ["start", "nobody_here"],
        ["restart", "el_serda", "nobody_here", "--json"],
        ["status", "nobody_here"],
        ["events", "nobody_here"],
    ],
)
def test_unknown_channel_is_one_line_and_exit_1(fleet: Supervisor, args: list[str]) -> None:
    result = ctl(fleet, *args)
    assert result.returncode == 1
    line = one_error_line(result)
    assert "'nobody_here'" in line
    assert "el_serda" in line  # the known ones are listed


def test_names_are_case_insensitive_in_every_command(fleet: Supervisor) -> None:
    # Twitch logins are case-insensitive: El_Serda is el_serda for start as for status.
    stop = ctl(fleet, "stop", "El_Serda")
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.startswith("el_serda: stopped")
    start = ctl(fleet, "start", "EL_SERDA", "Hub")
    assert start.returncode == 0, start.stderr
    assert re.fullmatch(
        r"el_serda: started \(PID \d+\)\nhub: already running \(PID \d+\)\n", start.stdout
    )
    restart = ctl(fleet, "restart", "Morthy", "--json")
    assert json.loads(restart.stdout)["results"][0]["name"] == "morthy"
    assert ctl(fleet, "status", "El_Serda").returncode == 0
    logs = ctl(fleet, "logs", "El_Serda", "-n", "1")
    assert logs.returncode == 0, logs.stderr


@pytest.mark.parametrize("command", ["start", "restart", "stop", "status", "events"])
def test_a_typo_gets_the_closest_name(fleet: Supervisor, command: str) -> None:
    result = ctl(fleet, command, "el_sreda")
    assert result.returncode == 1
    assert "unknown channel 'el_sreda' (did you mean el_serda?)" in one_error_line(result)


# --- metrics and events -----------------------------------------------------------


def test_metrics_prints_the_prometheus_text(fleet: Supervisor) -> None:
    result = ctl(fleet, "metrics")
    assert result.returncode == 0, result.stderr
    assert "# TYPE kissbot_up gauge" in result.stdout
    assert re.search(r'^kissbot_up\{process="el_serda"\} 1$', result.stdout, re.M)
    assert result.stdout.endswith("\n")


def poke_until_streaming(sup: Supervisor, watch: Stream, name: str) -> None:
    """Restart ``name`` until ``watch`` prints an event: then it is surely subscribed.

    kissbotctl subscribes in its own time; each restart waits for its outcome,
    so this loop is paced by the supervisor, not by a sleep.
    """
    for _ in range(100):
        assert ctl(sup, "restart", name).returncode == 0
        if watch.out.seen(rf"\b{name}\b"):
            return
    raise AssertionError(f"no event of {name} reached kissbotctl events")


def test_events_json_filtered_and_ended_by_ctrl_c(fleet: Supervisor, streams: list[Stream]) -> None:
    watch = Stream(fleet, "events", "el_serda", "--json")
    streams.append(watch)
    poke_until_streaming(fleet, watch, "el_serda")
    mark = watch.out.mark()
    assert ctl(fleet, "restart", "morthy").returncode == 0
    assert ctl(fleet, "restart", "el_serda").returncode == 0
    watch.out.wait_for(r'"kind": "ready"', since=mark)
    events = [json.loads(line) for line in watch.out.lines[mark:] if line != EOF_MARK]
    for event in events:
        assert list(event) == list(EVENT_KEYS)
        # morthy's events came first on the stream and were filtered out.
        assert event["name"] == "el_serda"
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "command"
    assert "exited" in kinds
    assert kinds[-1] == "ready"
    assert events[-1]["state"] == "running"
    assert events[-1]["pid"] == fleet.bot("el_serda")["pid"]

    watch.proc.send_signal(signal.SIGINT)
    code, stderr = watch.finish()
    assert code == 130
    assert stderr == ""


def test_events_human_lines_and_supervisor_going_away(
    fleet: Supervisor, streams: list[Stream]
) -> None:
    watch = Stream(fleet, "events")
    streams.append(watch)
    poke_until_streaming(fleet, watch, "morthy")
    pid = fleet.bot("el_serda")["pid"]
    os.kill(pid, signal.SIGKILL)
    line = watch.out.wait_for(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d el_serda exited: killed by SIGKILL"
    ).string
    assert "\x1b" not in line  # not a terminal
    watch.out.wait_for(r"^\S+ \S+ el_serda ready$")
    fleet.stop()
    code, stderr = watch.finish()
    assert code == 1
    assert stderr == (
        "kissbotctl: the supervisor closed the events stream (it stopped or restarted)\n"
    )


# --- unreachable, denied --------------------------------------------------------------


@pytest.mark.parametrize("args", [["events"], ["metrics"], ["restart", "el_serda", "--json"]])
def test_supervisor_not_running(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "control.sock"
    result = subprocess.run(
        [KISSBOTCTL, "--socket", str(missing), *args],
        env=ctl_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    assert one_error_line(result) == (
        f"kissbotctl: no supervisor at {missing} (No such file or directory); "
        "is kissbot-supervisor running?"
    )


def test_permission_denied_on_the_socket(start_fleet: StartFleet) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run kissbotctl as another user")
    runtime = Path(tempfile.mkdtemp(prefix="kissbot-ctl-", dir="/tmp"))
    try:
        runtime.chmod(0o755)
        sup = start_fleet(fleet_config(["guarded"]), runtime_dir=runtime / "run")
        sup.wait_for(r"guarded: ready")
        sup.runtime_dir.chmod(0o755)
        sup.control.chmod(0o000)
        for args in (["status"], ["events"], ["metrics"], ["stop", "guarded", "--json"]):
            result = sup.ctl(*args, user=NOBODY)
            assert result.returncode == 1
            assert one_error_line(result) == (
                f"kissbotctl: permission denied on {sup.control} "
                "(you need to be root, the supervisor's user, or in its operators' group "
                "(control_group, kissbot-operators by default))"
            )
        assert sup.bot("guarded")["state"] == "running"
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


# --- terminal: colour and width ----------------------------------------------------


@pytest.mark.parametrize("no_color", [False, True], ids=["colour", "NO_COLOR"])
def test_colour_only_on_a_terminal_without_no_color(fleet: Supervisor, no_color: bool) -> None:
    env = ctl_env(TERM="xterm")
    if no_color:
        env["NO_COLOR"] = "1"
    term = PtyProgram([KISSBOTCTL, "--socket", str(fleet.control), "status"], env, columns=80)
    try:
        assert term.wait() == 0
        term.expect(r"morthy")
        raw = term.raw
    finally:
        term.close()
    if no_color:
        assert "\x1b" not in raw
    else:
        assert "\x1b[32mrunning\x1b[0m" in raw
    lines = plain(raw).splitlines()
    assert "2/2 bots running" in lines
    assert all(len(line) <= 80 for line in lines), lines


def test_an_unsized_terminal_gets_80_columns(fleet: Supervisor) -> None:
    # A pty nobody sized (script(1), CI runners) reports 0 x 0: not a 0-column table.
    env = ctl_env(TERM="xterm", NO_COLOR="1")
    term = PtyProgram(
        [KISSBOTCTL, "--socket", str(fleet.control), "status"], env, rows=0, columns=0
    )
    try:
        assert term.wait() == 0
        raw = term.raw
    finally:
        term.close()
    lines = plain(raw).splitlines()
    assert any(line.startswith("══ KissBot supervisor ══") for line in lines), lines
    assert re.search(r"^el_serda +running +\d+ ", plain(raw), re.M), lines


def test_a_long_channel_name_and_pids_are_never_cut(fleet: Supervisor) -> None:
    long_name = "a_very_long_channel_name1"  # 25: the longest Twitch login
    write_config(fleet.workdir, fleet_config(["el_serda", "morthy", long_name], hub=True))
    assert ctl(fleet, "reload").returncode == 0
    fleet.wait_for(rf"{long_name}: ready")
    pids = [str(b["pid"]) for b in fleet.status()["bots"]]
    for columns in (60, 80, 120):
        # Less needed columns make room: the channel name and the PID are never cut.
        human = ctl(fleet, "status", COLUMNS=str(columns))
        assert re.search(rf"^{long_name} +running +\d+", human.stdout, re.M), human.stdout
        assert all(pid in human.stdout for pid in pids)
        assert "…" not in human.stdout.split("CHANNEL", 1)[1]
        assert all(len(line) <= columns for line in human.stdout.splitlines())


@pytest.mark.parametrize(("encoding", "dot"), [("latin-1", "·"), ("ascii", "|")])
def test_a_terminal_that_is_not_utf8_gets_ascii(fleet: Supervisor, encoding: str, dot: str) -> None:
    human = subprocess.run(
        [KISSBOTCTL, "--socket", str(fleet.control), "status"],
        env=ctl_env(PYTHONIOENCODING=encoding),
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert human.returncode == 0, human.stderr
    assert human.stderr == b""
    out = human.stdout.decode(encoding)
    assert out.startswith("== KissBot supervisor ==")  # what the encoding lacks, as ASCII
    assert re.search(rf"^backend native \{dot} PID \d+", out, re.M)  # what it has, as is


# --- help and completion ------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "status",
        "start",
        "stop",
        "restart",
        "reload",
        "logs",
        "events",
        "metrics",
        "shell",
        "completion",
    ],
)
def test_help_of_each_subcommand(command: str) -> None:
    result = subprocess.run(
        [KISSBOTCTL, command, "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: kissbotctl {command}")


def bash_complete(script: str, words: list[str], env: dict[str, str]) -> list[str]:
    """COMPREPLY of the generated function for ``words`` (the last is being completed)."""
    program = (
        'source /dev/stdin; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _kissbotctl; '
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program, "bash", *words],
        input=script,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert result.stderr == ""
    return [line for line in result.stdout.splitlines() if line]


def test_bash_completion(fleet: Supervisor) -> None:
    script = subprocess.run(
        [KISSBOTCTL, "completion", "bash"], capture_output=True, text=True, check=True
    ).stdout
    env = ctl_env(KISSBOT_CONTROL_SOCKET=str(fleet.control))
    assert bash_complete(script, [KISSBOTCTL, "sta"], env) == ["status", "start"]
    assert bash_complete(script, [KISSBOTCTL, "--"], env) == [
        "--help",
        "--version",
        "--socket",
        "--workdir",
        "--timeout",
    ]
    assert bash_complete(script, [KISSBOTCTL, "restart", ""], env) == [
        "el_serda",
        "morthy",
        "hub",
        "all",
    ]
    assert bash_complete(script, [KISSBOTCTL, "restart", "el_serda", "m"], env) == ["morthy"]
    assert bash_complete(script, [KISSBOTCTL, "logs", ""], env) == [
        "el_serda",
        "morthy",
        "hub",
        "all",
    ]
    assert bash_complete(script, [KISSBOTCTL, "logs", "--f"], env) == ["--follow"]
    assert bash_complete(script, [KISSBOTCTL, "completion", ""], env) == ["bash", "zsh"]
    assert bash_complete(script, [KISSBOTCTL, "to"], env) == ["top"]
    assert bash_complete(script, [KISSBOTCTL, "top", "--i"], env) == ["--interval"]
    assert bash_complete(script, [KISSBOTCTL, "top", "--sort", "c"], env) == ["cpu"]
    assert bash_complete(script, [KISSBOTCTL, "top", "--interval", ""], env) == []
    # --socket on the command line is passed on to the name lookup.
    other = ctl_env(KISSBOT_CONTROL_SOCKET="/nonexistent/control.sock")
    words = [KISSBOTCTL, "--socket", str(fleet.control), "stop", "el"]
    assert bash_complete(script, words, other) == ["el_serda"]
    # No supervisor: no names, no noise.
    assert bash_complete(script, [KISSBOTCTL, "stop", "el"], other) == []


def test_complete_names_is_quiet_without_a_supervisor(tmp_path: Path) -> None:
    result = subprocess.run(
        [KISSBOTCTL, "--socket", str(tmp_path / "none.sock"), "__complete-names", "stop"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def zsh_and_completion() -> tuple[str, str]:
    """zsh's path and kissbotctl's zsh completion script; the test is skipped without zsh."""
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed (apt-get install zsh)")
    script = subprocess.run(
        [KISSBOTCTL, "completion", "zsh"], capture_output=True, text=True, check=True
    ).stdout
    return zsh, script


def test_zsh_completion(fleet: Supervisor) -> None:
    zsh, script = zsh_and_completion()
    # compadd, compset and _describe are completion-widget builtins; shell functions
    # of the same name take precedence, so they can stand in and print what is offered.
    program = (
        "source /dev/stdin; "
        'compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@"; }; '
        "compset() { PREFIX=${PREFIX##*,}; }; "
        '_describe() { local -a c; c=("${(@P)4}"); print -rl -- "${c[@]%%:*}"; }; '
        'words=("$@"); CURRENT=$#; PREFIX=${words[CURRENT]}; _kissbotctl'
    )

    def complete(*words: str) -> list[str]:
        result = subprocess.run(
            [zsh, "-f", "-c", program, "zsh", KISSBOTCTL, *words],
            input=script,
            env=ctl_env(KISSBOT_CONTROL_SOCKET=str(fleet.control)),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        )
        assert result.stderr == ""
        return result.stdout.split()

    assert "status" in complete("sta")
    assert complete("top", "--sort", "") == ["state", "name", "cpu", "memory", "restarts"]
    assert complete("restart", "") == ["el_serda", "morthy", "hub", "all"]
    assert complete("logs", "--") == [
        "-h",
        "--help",
        "--socket",
        "--workdir",
        "--timeout",
        "-n",
        "--lines",
        "--since",
        "--grep",
        "-f",
        "--follow",
    ]
