"""KissBot's names and rules, which every layer needs: one home for each.

The hub's process name, what a Twitch login is, the bot account a config
names by default, and the systemd unit each process runs as. Pure, and cheap
to import (``re`` only), so that ``kissbotctl`` can use it without loading the
settings.
"""

from __future__ import annotations

import re

# The one process that is not a channel; every other process name is a login.
HUB = "hub"

# Twitch logins: 4 to 25 of a-z, 0-9 and underscore. Twitch treats them
# case-insensitively and KissBot stores them lowercased.
LOGIN_RE = re.compile(r"[a-z0-9_]{4,25}")
LOGIN_RULE = "is not a Twitch login (4-25 of a-z, 0-9, _)"
# KissBot's own default for bot.name.
DEFAULT_BOT_LOGIN = "serda_bot"

# Directories a KissBot checkout needs before its programs start (the hub dies at
# import without logs/; the bots write pids/, logs/broadcast/CH/ and cache/).
KISSBOT_DIRS = ("pids", "logs", "cache")

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
