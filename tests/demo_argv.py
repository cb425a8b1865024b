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


def per_channel_bot_command(flags: Mapping[str, Sequence[str]]) -> list[str]:
    """One template for every bot, with fault flags chosen per channel.

    The template can only vary by placeholders, so a two-line wrapper picks the
    channel's flags from a table and execs the demo bot (same PID: the
    supervisor sees the bot itself). Braces are doubled for the placeholders.
    """
    table = json.dumps({k: list(v) for k, v in flags.items()})
    return [
        "{supervisor_python}", "-c",
        "import json,os,sys;f=json.loads(sys.argv[1]).get(sys.argv[2],[]);"
        "os.execv(sys.executable,[sys.executable,'-m','kissbot_supervisor.demo','bot',"
        "'--channel',sys.argv[2],'--hub-socket',sys.argv[3],'--eventsub',sys.argv[4],"
        "'--chat-interval','0','--broadcast-poll','0',*f])",
        table.replace("{", "{{").replace("}", "}}"), "{channel}", "{hub_socket}", "{eventsub}",
    ]  # fmt: skip
