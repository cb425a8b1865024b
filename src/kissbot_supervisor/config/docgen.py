"""Writes docs/configuration.md from the setting declarations (``make docs``).

A test checks that the committed file matches, so the doc cannot drift from
what the parser accepts.
"""

from __future__ import annotations

import sys

from .settings import declarations, describe_default

HEADER = """\
# Configuration

kissbot-supervisor reads KissBot's own config file (`config/config.yaml` by
default, relative to `--workdir`). From it, it reads `twitch.channels` (one
bot per channel; each must be a Twitch login: 4-25 of a-z, 0-9, `_`;
uppercase is lowercased), `bot.name` (whose `bot` token the bots use) and,
in YAML token mode, `twitch.tokens`. The hub's token is the `broadcaster`
token of `hub.token_login` in the token DB, in both token modes, as KissBot's
hub loads it (`twitch.broadcaster_id` does not choose it). Every other key
belongs to the bot and the hub and is left alone.

The supervisor's own settings live under a `supervisor:` key, in a file of
their own: the **settings file**, `/etc/kissbot-supervisor/supervisor.yaml`
(or `--settings PATH`). They choose what runs and as whom, so that file and
every directory above it must be writable by root (or the supervisor's own
user) only, or the supervisor refuses it. Without a settings file, the
`supervisor:` section of KissBot's config is read instead, under the same
rule: fine in a checkout of your own, refused in one the bots' user owns (the
production layout, where a taken-over bot could otherwise choose the
commands root runs; see docs/security.md). With a settings file, a
`supervisor:` section in KissBot's config is ignored, and said so.

Every setting also has a command-line flag; flags win over the file, the
file over the defaults. A wrong value is reported with the file, the key
path, the value and what was expected, and on reload it changes nothing.
A key written twice in one mapping (two `supervisor:` sections) is an error,
not the second silently replacing the first; a setting written at the top
level of KissBot's config, outside `supervisor:`, is reported as not read. In
a YAML list, `- #el_serda` is an empty item (`#` starts a comment): write the
login alone.

The old supervisor's flags are all accepted: `--config`, `--use-db`, `--db`,
`--enable-hub`, `--hub-socket`, `--non-interactive`; plus `--workdir DIR`,
`--settings PATH` and `--check-config`.

This file is generated from the declarations in
`src/kissbot_supervisor/config/settings.py` by `make docs`.

| key (under `supervisor:`) | flag | type | default | meaning |
|---|---|---|---|---|
"""


def render() -> str:
    rows = []
    for _name, default, meta in declarations():
        flags = ", ".join(f"`{f}`" for f in meta.flags) or "-"
        help_text = meta.help.replace("|", "\\|")
        shown = describe_default(default)
        rows.append(f"| `{meta.key}` | {flags} | {meta.kind} | `{shown}` | {help_text} |")
    return HEADER + "\n".join(rows) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
