"""KissBot's names and rules, which every layer needs: one home for each.

The hub's process name, what a Twitch login is, the bot account a config
names by default, and the systemd unit each process runs as. Pure, and cheap
to import (``re`` only), so that ``kissbotctl`` can use it without loading the
settings.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: kissbotctl start-up cost
    from collections.abc import Sequence

# The one process that is not a channel; every other process name is a login.
HUB = "hub"

# Twitch logins: 4 to 25 of a-z, 0-9 and underscore. Twitch treats them
# case-insensitively and KissBot stores them lowercased.
LOGIN_MAX = 25
LOGIN_RE = re.compile(rf"[a-z0-9_]{{4,{LOGIN_MAX}}}")
LOGIN_RULE = "is not a Twitch login (4-25 of a-z, 0-9, _)"
# KissBot's own default for bot.name.
DEFAULT_BOT_LOGIN = "serda_bot"

# Directories a KissBot checkout needs before its programs start (the hub dies at
# import without logs/; the bots write pids/, logs/broadcast/CH/ and cache/).
KISSBOT_DIRS = ("pids", "logs", "cache")


def system_log(channel: str) -> str:
    """The file a KissBot bot writes every 60 s once it runs (CPU and RAM figures),
    relative to the workdir: its liveness signal under ``bot.liveness: system-log``."""
    return f"logs/broadcast/{channel}/system.log"


# KissBot's YAML token mode: the texts under twitch.tokens.LOGIN.
YAML_TOKEN_TEXTS = ("access_token", "refresh_token")

HUB_UNIT = "kissbot-hub.service"
BOT_PREFIX = "kissbot-bot@"
SERVICE_SUFFIX = ".service"
SUPERVISOR_UNIT = "kissbot-supervisor.service"
DEFAULT_SLICE = "kissbot.slice"


def login_of(name: str) -> str | None:
    """``name`` lowercased if it is a Twitch login, else None.

    ``isascii()`` is checked on the name as written: ``str.lower()`` maps a few
    non-ASCII letters to ASCII ("\\u212a" KELVIN SIGN -> "k"), which would slip
    past the pattern; anything else that is not a login (paths, spaces, unit-name
    or shell metacharacters) never gets further.
    """
    lowered = name.lower()
    if name.isascii() and LOGIN_RE.fullmatch(lowered):
        return lowered
    return None


def process_name(text: str) -> str:
    """The process a name typed by an operator means: ``El_Serda`` is ``el_serda``.

    The one rule for names coming in (control requests, kissbotctl): Twitch
    logins are case-insensitive, and ``hub`` and ``all`` are matched the same
    way. Only ASCII is folded, for the reason :func:`login_of` gives.
    """
    return text.lower() if text.isascii() else text


# Up to this many names, an unknown one is answered with the whole list; beyond, with
# the closest names only (300 channels are 8 KB: no help on one line).
LIST_ALL_UP_TO = 10


def unknown_names_text(unknown: Sequence[str], known: Sequence[str]) -> str:
    """One line for names that match no process: the closest known names for each."""
    import difflib  # only a typo needs it

    parts = []
    for name in unknown:
        close = difflib.get_close_matches(process_name(name), known, n=3, cutoff=0.6)
        if close:
            parts.append(f"{name!r} (did you mean {' or '.join(close)}?)")
        elif process_name(name) == HUB:
            parts.append(f"{name!r} (this fleet runs no hub)")
        else:
            parts.append(repr(name))
    noun = "channel" if len(unknown) == 1 else "channels"
    text = f"unknown {noun} {', '.join(parts)}"
    if any("(" in part for part in parts):
        return text
    channels = [n for n in known if n != HUB]
    if len(channels) <= LIST_ALL_UP_TO:
        return f"{text} (known: {', '.join(channels) or 'none'})"
    return (
        f"{text}: no close name among the {len(channels)} channels (kissbotctl status lists them)"
    )


def bot_unit(channel: str) -> str:
    """``kissbot-bot@CHANNEL.service``; ValueError unless ``channel`` is a lowercase
    login (checked again here: a unit name is built from it)."""
    if login_of(channel) != channel:
        raise ValueError(f"{channel!r} {LOGIN_RULE}")
    return f"{BOT_PREFIX}{channel}{SERVICE_SUFFIX}"


def unit_of(name: str) -> str:
    """The unit of a process name ("hub" or a channel)."""
    return HUB_UNIT if name == HUB else bot_unit(name)


def name_of_unit(unit: str) -> str | None:
    """The process name of one of our units; None for any other unit (run-credentials-*.mount)."""
    if unit == HUB_UNIT:
        return HUB
    if unit.startswith(BOT_PREFIX) and unit.endswith(SERVICE_SUFFIX):
        channel = unit[len(BOT_PREFIX) : -len(SERVICE_SUFFIX)]
        if login_of(channel) == channel:
            return channel
    return None
