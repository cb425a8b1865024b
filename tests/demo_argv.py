"""argv templates (``supervisor.bot.command``/``hub.command``) that run the demo fleet."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence


def demo_bot_command(*extra: str) -> list[str]:
    return [
        "{supervisor_python}", "-m", "kissbot_supervisor.demo", "bot",
        "--channel", "{channel}", "--config", "{config}", "--eventsub", "{eventsub}",
        "--hub-socket", "{hub_socket}", "--chat-interval", "0", "--broadcast-poll", "0",
        *extra,
    ]  # fmt: skip


def demo_hub_command(*extra: str) -> list[str]:
    return [
        "{supervisor_python}", "-m", "kissbot_supervisor.demo", "hub",
        "--config", "{config}", "--db", "{db}", "--socket", "{hub_socket}", *extra,
    ]  # fmt: skip


# bot.preload forks a Python program, ``PYTHON SCRIPT.py ...``: the same table as
# below, picked by a script in the workdir that runs the demo bot in-process (no
# exec: the fork server's imports stay in use). write_config puts it there.
PER_CHANNEL_SCRIPT = "per_channel.py"
PER_CHANNEL_SOURCE = """\
import json
import sys

from kissbot_supervisor.demo.__main__ import main

if __name__ == "__main__":
    table, channel, hub_socket, eventsub = sys.argv[1:5]
    flags = json.loads(table).get(channel, [])
    sys.exit(main([
        "bot", "--channel", channel, "--hub-socket", hub_socket, "--eventsub", eventsub,
        "--chat-interval", "0", "--broadcast-poll", "0", *flags,
    ]))
"""
# What the fork server imports beyond the script's own imports (the demo loads its
# programs lazily, as KissBot's main.py loads some modules inside main()).
PRELOAD_MODULES = ["kissbot_supervisor.demo.bot", "kissbot_supervisor.demo.common"]


def per_channel_bot_command(flags: Mapping[str, Sequence[str]], script: bool = False) -> list[str]:
    """One template for every bot, with fault flags chosen per channel.

    The template can only vary by placeholders, so a two-line wrapper picks the
    channel's flags from a table and execs the demo bot (same PID: the
    supervisor sees the bot itself). Braces are doubled for the placeholders.
    ``script``: the wrapper is PER_CHANNEL_SCRIPT, run as a program (for preload).
    """
    table = json.dumps({k: list(v) for k, v in flags.items()})
    if script:
        return [
            "{supervisor_python}", PER_CHANNEL_SCRIPT,
            table.replace("{", "{{").replace("}", "}}"), "{channel}", "{hub_socket}", "{eventsub}",
        ]  # fmt: skip
    return [
        "{supervisor_python}", "-c",
        "import json,os,sys;f=json.loads(sys.argv[1]).get(sys.argv[2],[]);"
        "os.execv(sys.executable,[sys.executable,'-m','kissbot_supervisor.demo','bot',"
        "'--channel',sys.argv[2],'--hub-socket',sys.argv[3],'--eventsub',sys.argv[4],"
        "'--chat-interval','0','--broadcast-poll','0',*f])",
        table.replace("{", "{{").replace("}", "}}"), "{channel}", "{hub_socket}", "{eventsub}",
    ]  # fmt: skip
