"""Every ``supervisor:`` setting, declared once.

Each field of :class:`Settings` is one setting: its key under ``supervisor:``
in the YAML file, its type (a parser), its default, its help text and its
command-line flag all live in the field's declaration. The YAML reader, the
argument parser, the error messages and ``docs/configuration.md`` are all
derived from this table, so a setting cannot be documented one way and parsed
another.

Parsers share one signature, ``(value) -> parsed``, and raise
:class:`SettingValueError` with the rule the value broke; the caller adds the
file and key path.

Why one module of 650 lines: it is the one table of every setting, by design
(mkosi's is one table too); its parsers are a few lines each and sit next to
the settings that use them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence

from ..core.records import field, fields, record
from ..kissbot.names import LOGIN_RULE, login_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Parser = Callable[[object], Any]


class SettingValueError(ValueError):
    """A value broke a setting's rule; ``rule`` completes "'value' ..."."""

    def __init__(self, value: object, rule: str) -> None:
        super().__init__(f"{shown(value)} {rule}")
        self.value = value
        self.rule = rule


def shown(value: object) -> str:
    """``repr(value)`` cut short for an error message: a YAML alias bomb is millions
    of items and deep nesting overflows repr, and neither may make the message
    unreadable or the error itself fail. Short values read exactly as repr."""
    import reprlib  # lazy: only an error needs it

    short = reprlib.Repr()
    short.maxlevel = 3
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    short.maxstring = short.maxother = short.maxlong = 120
    return short.repr(value)


_SLICE_RE = re.compile(r"[A-Za-z0-9_:]+(?:-[A-Za-z0-9_:]+)*\.slice")
_USER_RE = re.compile(r"[0-9]+|[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGTkmgt])?")


@record
class SettingMeta:
    key: str
    parse: Parser
    help: str
    kind: str  # shown in docs and --help: "seconds", "path", "one of: a, b"
    flags: tuple[str, ...] = ()
    boolean_flag: bool = False  # a flag that takes no value and sets True


def _flag_for(key: str) -> str:
    return "--" + key.replace(".", "-").replace("_", "-")


def setting(
    key: str,
    default: Any,
    parse: Parser,
    help: str,
    kind: str,
    *,
    flag: bool = True,
    aliases: tuple[str, ...] = (),
) -> Any:
    """Declare one setting as a dataclass field (see the module docstring)."""
    flags: tuple[str, ...] = ()
    if flag:
        # An alias may be the derived flag itself (--hub-socket): listed once.
        flags = tuple(dict.fromkeys((_flag_for(key), *aliases)))
    meta = SettingMeta(
        key=key,
        parse=parse,
        help=help,
        kind=kind,
        flags=flags,
        boolean_flag=parse is parse_bool,
    )
    return field(default=default, metadata={"setting": meta})


# --- parsers -------------------------------------------------------------


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
        return False
    raise SettingValueError(value, "is not a boolean (expected true or false)")


def _number(value: object) -> float:
    if isinstance(value, bool):
        raise SettingValueError(value, "is not a number")
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int past 1.8e308: YAML reads any number of digits
            raise SettingValueError(value, "is not a finite number") from None
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise SettingValueError(value, "is not a number") from None
    else:
        raise SettingValueError(value, "is not a number")
    if not math.isfinite(number):
        raise SettingValueError(value, "is not a finite number")
    return number


def seconds(minimum: float = 0.0, maximum: float = 86_400.0) -> Parser:
    def parse(value: object) -> float:
        number = _number(value)
        if not minimum <= number <= maximum:
            raise SettingValueError(
                value, f"is out of range (expected seconds from {minimum:g} to {maximum:g})"
            )
        return number

    return parse


def integer(minimum: int, maximum: int) -> Parser:
    def parse(value: object) -> int:
        number = _number(value)
        if number != int(number) or not minimum <= number <= maximum:
            raise SettingValueError(value, f"is not a whole number from {minimum} to {maximum}")
        return int(number)

    return parse


def choice(*options: str) -> Parser:
    def parse(value: object) -> str:
        if not isinstance(value, str) or value not in options:
            raise SettingValueError(value, f"is not one of: {', '.join(options)}")
        return value

    return parse


def text(value: object) -> str:
    if not isinstance(value, str):
        raise SettingValueError(value, "is not a string")
    if "\0" in value:
        raise SettingValueError(value, "contains a NUL byte")
    return value


def twitch_login(value: object) -> str:
    """A Twitch login, lowercased (Twitch logins are case-insensitive and KissBot
    stores them lowercased, so ``El_Serda`` is ``el_serda``; the rule:
    :func:`.names.login_of`)."""
    if not isinstance(value, str):
        raise SettingValueError(value, "is not a string (expected a Twitch login)")
    login = login_of(value)
    if login is None:
        raise SettingValueError(value, LOGIN_RULE)
    return login


def path_text(value: object) -> str:
    parsed = text(value)
    if not parsed:
        raise SettingValueError(value, "is empty (expected a file path)")
    return parsed


def optional_path(value: object) -> str | None:
    if value is None or value == "":
        return None
    return path_text(value)


def argv(value: object) -> tuple[str, ...] | None:
    """A command as a YAML list of strings (never a shell string: no quoting traps)."""
    if value is None:
        return None
    if isinstance(value, str):
        raise SettingValueError(
            value, "is a string (expected a list of arguments, e.g. ['{python}', 'main.py'])"
        )
    if not isinstance(value, list) or not value:
        raise SettingValueError(value, "is not a non-empty list of arguments")
    for item in value:
        if not isinstance(item, str) or not item or "\0" in item:
            raise SettingValueError(value, f"has an argument {shown(item)} that is not a string")
    return tuple(value)


def bytes_size(value: object) -> int:
    """A size in bytes: a whole number, or a number with a K, M, G or T suffix (powers of 1024)."""
    if isinstance(value, bool):
        raise SettingValueError(value, "is not a size (expected bytes, or e.g. 512M or 2G)")
    if isinstance(value, int):
        number = float(value) if value <= 2**60 else math.inf  # huge ints overflow float()
    elif isinstance(value, str) and (match := _SIZE_RE.fullmatch(value.strip())):
        number = float(match[1]) * 1024 ** " KMGT".index((match[2] or " ").upper())
    else:
        raise SettingValueError(value, "is not a size (expected bytes, or e.g. 512M or 2G)")
    # The range first: int() of an infinite number (a string of 400 digits) raises.
    if not 4096 <= number <= 2**60 or number != int(number):
        raise SettingValueError(value, "is out of range (expected whole bytes, at least 4096)")
    return int(number)


def optional_bytes_size(value: object) -> int | None:
    if value is None or value == "":
        return None
    return bytes_size(value)


def optional_integer(minimum: int, maximum: int) -> Parser:
    whole = integer(minimum, maximum)

    def parse(value: object) -> int | None:
        if value is None or value == "":
            return None
        parsed: int = whole(value)
        return parsed

    return parse


def optional_user_name(value: object) -> str | None:
    """A user or group name (or a numeric id) as useradd accepts it; absent is None."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return str(value)
    if not isinstance(value, str) or not _USER_RE.fullmatch(value):
        raise SettingValueError(value, "is not a user or group name (e.g. kissbot) or id")
    return value


def group_name(value: object) -> str:
    name = optional_user_name(value)
    if name is None:
        raise SettingValueError(value, "is empty (expected a group name, e.g. kissbot-operators)")
    return name


def slice_name(value: object) -> str:
    name = text(value)
    if not _SLICE_RE.fullmatch(name) or len(name) > 255:
        raise SettingValueError(value, "is not a slice unit name (e.g. kissbot.slice)")
    return name


def absolute_paths(value: object) -> tuple[str, ...]:
    """A YAML list of absolute paths."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SettingValueError(value, "is not a list of absolute paths")
    for item in value:
        if not isinstance(item, str) or not item.startswith("/") or "\0" in item:
            raise SettingValueError(
                value, f"has an entry {shown(item)} that is not an absolute path"
            )
    return tuple(value)


_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def module_names(value: object) -> tuple[str, ...]:
    """A YAML list of dotted Python module names (``yaml``, ``twitchAPI.twitch``)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SettingValueError(value, "is not a list of module names (e.g. [aiohttp, yaml])")
    for item in value:
        if not isinstance(item, str) or not _MODULE_RE.fullmatch(item):
            raise SettingValueError(
                value, f"has an entry {shown(item)} that is not a module name (e.g. aiohttp.web)"
            )
    return tuple(value)


_LISTEN_RULE = "is not a listen address (expected 127.0.0.1:PORT, [::1]:PORT or unix:/path)"


def split_listen(value: object) -> tuple[str, str, int]:
    """``(family, host or path, port)`` of a ``metrics.listen`` value: ``inet``, ``inet6``
    or ``unix`` (port 0). Literal IP addresses only: no name lookup in the daemon, and
    an address other than loopback is only ever the one the operator wrote."""
    import socket  # already loaded by the daemon; imported here for the short-lived tools

    if not isinstance(value, str):
        raise SettingValueError(value, _LISTEN_RULE)
    address = text(value)
    if address.startswith("unix:"):
        path = address[5:]
        if not path.startswith("/") or len(path.encode()) > 107:
            raise SettingValueError(value, "is not unix:/ABSOLUTE/PATH (at most 107 bytes)")
        return "unix", path, 0
    host, sep, port_text = address.rpartition(":")
    # isascii: '²' is a digit to isdigit() but not to int().
    digits = port_text.isascii() and port_text.isdigit()
    if not sep or not digits or not 1 <= int(port_text) <= 65535:
        raise SettingValueError(value, _LISTEN_RULE + " with a port from 1 to 65535")
    family, af = "inet", socket.AF_INET
    if host.startswith("[") and host.endswith("]"):
        host, family, af = host[1:-1], "inet6", socket.AF_INET6
    try:
        socket.inet_pton(af, host)
    except (OSError, ValueError):
        raise SettingValueError(value, _LISTEN_RULE) from None
    return family, host, int(port_text)


def is_loopback(family: str, host: str) -> bool:
    return family == "unix" or host.startswith("127.") or host == "::1"


def optional_listen(value: object) -> str | None:
    if value is None or value == "":
        return None
    split_listen(value)
    return text(value)


# --- the table -------------------------------------------------------------

READY_BOT = ("file", "notify", "none")
READY_HUB = ("protocol", "db", "socket", "notify", "none")
BOT_LIVENESS = ("none", "system-log")


@record
class Settings:
    """The supervisor's own settings (``supervisor:`` in the KissBot config)."""

    backend: str = setting(
        "backend",
        "auto",
        choice("auto", "systemd", "native"),
        "Which backend carries out the supervision: `systemd` (transient units over D-Bus), "
        "`native` (the supervisor spawns the processes itself), or `auto` (systemd when "
        "PID 1 is systemd and its bus is reachable, else native).",
        "one of: auto, systemd, native",
    )
    control_socket: str | None = setting(
        "control_socket",
        None,
        optional_path,
        "Path of the control socket `kissbotctl` talks to. Default: `RUNTIME_DIR/control.sock`.",
        "path",
    )
    control_group: str = setting(
        "control_group",
        "kissbot-operators",
        group_name,
        "The operators' group: its members may use the control socket (`kissbotctl`), as "
        "may root and the supervisor's own user. Never the bots' user or group "
        "(`systemd.user`, `systemd.group`), even if listed in it: a taken-over bot must not "
        "drive the supervisor. Read at start.",
        "group name",
    )
    runtime_dir: str | None = setting(
        "runtime_dir",
        None,
        optional_path,
        "Directory for the notify socket, the control socket and credential files; it "
        "should be on tmpfs, and one supervisor holds it at a time. Default: "
        "`$RUNTIME_DIRECTORY` (under systemd), else a directory of this workdir's own "
        "(named after it) in `/run/kissbot-supervisor` for root when /run is tmpfs, else "
        "in `$XDG_RUNTIME_DIR/kissbot-supervisor`, else in "
        "`/dev/shm/kissbot-supervisor-UID`.",
        "path",
    )
    use_db: bool = setting(
        "use_db",
        False,
        parse_bool,
        "Tokens live in the SQLite DB: bots get `--use-db --db DB` and token states are read "
        "from the DB.",
        "boolean",
    )
    db: str = setting(
        "db", "kissbot.db", path_text, "The KissBot SQLite DB, relative to the workdir.", "path"
    )
    stop_timeout_sec: float = setting(
        "stop_timeout_sec",
        10.0,
        seconds(0.1, 3600),
        "How long a process gets after SIGTERM before SIGKILL.",
        "seconds",
    )
    bot_command: tuple[str, ...] | None = setting(
        "bot.command",
        None,
        argv,
        "The bot's argv as a list, with placeholders {python} {channel} {config} {db} "
        "{hub_socket} {eventsub} {supervisor_python}. Absent: the exact upstream argv "
        "`{python} main.py --channel CH --config CFG --eventsub MODE [--use-db --db DB] "
        "[--hub-socket SOCK]`.",
        "list of strings",
        flag=False,
    )
    bot_ready: str = setting(
        "bot.ready",
        "file",
        choice(*READY_BOT),
        "When a bot counts as ready: `file` (`pids/CHANNEL.ready` appears, what unmodified "
        "KissBot bots do), `notify` (it sends sd_notify READY=1), `none` (as soon as it runs).",
        "one of: " + ", ".join(READY_BOT),
    )
    bot_credential: bool = setting(
        "bot.credential",
        False,
        parse_bool,
        "Hand each bot its token (the `bot` token of `bot.name`) as the credential file "
        "`token`: in `$CREDENTIALS_DIRECTORY` (native) or through `LoadCredential=` "
        "(systemd). Unmodified KissBot never reads it (it reads the DB or its config "
        "itself): turn it on only for bots changed to. In DB mode a short-lived child "
        "decrypts the token at each start (about 30 ms) and writes the file, so the "
        "supervisor never loads cryptography.",
        "boolean",
    )
    bot_logins_per_10s: int = setting(
        "bot.logins_per_10s",
        20,
        integer(0, 10_000),
        "Twitch's login limit for the bot account that every bot logs in with: 20 per 10 s, "
        "200 for a verified bot. Bot starts (first starts, restarts after a crash or for a "
        "new hub, operators' starts) are paced so that no 10 s holds more (counted over "
        "12 s: a bot logs in a little after its start); a bot waiting for its turn shows "
        '"waiting for a login slot". 0 turns pacing off.',
        "count",
    )
    bot_watchdog_sec: float = setting(
        "bot.watchdog_sec",
        0.0,
        seconds(0, 3600),
        "0 turns the watchdog off. Otherwise a bot that sends no sd_notify WATCHDOG=1 for "
        "this long is killed and restarted; it gets WATCHDOG_USEC in its environment.",
        "seconds",
    )
    bot_liveness: str = setting(
        "bot.liveness",
        "none",
        choice(*BOT_LIVENESS),
        "`system-log`: for bots that send no watchdog pings (KissBot's own send none), "
        "the supervisor watches `logs/broadcast/CHANNEL/system.log`, which KissBot writes "
        "every 60 s once it runs (with inotify: no polling). A bot whose file stays silent "
        "for `bot.liveness_silence_sec` (counted from its start) is hung: it is killed and "
        'restarted like a watchdog timeout, with the reason ("hung: '
        'logs/broadcast/CH/system.log silent for 5 min"). Only writes to a regular file '
        "count: a symlink, FIFO or directory put there is no sign of life. `none`: off. "
        "Not together with `bot.watchdog_sec`.",
        "one of: " + ", ".join(BOT_LIVENESS),
    )
    bot_liveness_silence_sec: float = setting(
        "bot.liveness_silence_sec",
        300.0,
        seconds(1, 86_400),
        "With `bot.liveness: system-log`, how long a bot's `system.log` may stay silent "
        "before the bot counts as hung. KissBot writes it every 60 s, and only once it "
        "runs: keep this well above 60 s plus a bot's start-up time (under 120 s is said "
        "as a warning at start).",
        "seconds",
    )
    bot_oom_score_adjust: int = setting(
        "bot.oom_score_adjust",
        500,
        integer(-1000, 1000),
        "The kernel's OOM score adjustment of each bot (-1000 to 1000; higher is killed "
        "first when memory runs out). The supervisor sets its own to -900: it is the "
        "largest process of a small fleet, and its death would take a native fleet with it.",
        "integer",
    )
    bot_memory_max: int | None = setting(
        "bot.memory_max",
        None,
        optional_bytes_size,
        "The memory each bot may use: bytes, or a number with K, M, G or T (powers of 1024), "
        "e.g. `200M`. Over it, the bot is killed and restarted with the backoff (a leak that "
        "comes back each time ends parked, with the reason). systemd: the unit's `MemoryMax=` "
        "(the kernel's OOM killer enforces it); native: its resident memory, sampled every "
        "5 s (no wake-up when unset). Absent: no cap.",
        "bytes",
    )
    bot_start_timeout_sec: float = setting(
        "bot.start_timeout_sec",
        120.0,
        seconds(0, 3600),
        "A bot not ready this long after its start is stopped and counted as a failure; "
        "0 waits forever.",
        "seconds",
    )
    bot_preload: bool = setting(
        "bot.preload",
        False,
        parse_bool,
        "Native backend: start bots from a fork server that imported the bot program's "
        "modules once, so that the bots share that memory (and start faster). Applies to a "
        "bot command `PYTHON SCRIPT.py ...` or `PYTHON -m MODULE ...`; the modules are the "
        "program's top-level imports and `bot.preload_modules`. When the fork server cannot "
        "serve, the log says why and bots start the normal way. When the bot's code changes "
        "on disk, the next starts use the new code; running bots keep the old code until "
        "restarted (`kissbotctl restart all --rolling N`). Read at the supervisor's start. "
        "See docs/design.md.",
        "boolean",
    )
    bot_preload_modules: tuple[str, ...] = setting(
        "bot.preload_modules",
        (),
        module_names,
        "With `bot.preload`: more modules for the fork server to import, those the bot "
        "imports lazily inside functions (e.g. `[aiohttp, twitchAPI.twitch]`); its "
        "top-level imports are found without this list.",
        "list of module names",
        flag=False,
    )
    bot_memory_merge: bool = setting(
        "bot.memory_merge",
        False,
        parse_bool,
        "With `bot.preload`: open the forked bots' memory to the kernel's same-page merging "
        "(KSM, `PR_SET_MEMORY_MERGE`, Linux 6.4 or later), which merges the identical pages "
        "the bots copied from the fork server. Costs the CPU of the kernel's ksmd, and does "
        "nothing until an administrator switches KSM on (`/sys/kernel/mm/ksm/run`); the log "
        "says which. See docs/operations.md.",
        "boolean",
    )
    hub_enabled: bool = setting(
        "hub.enabled",
        False,
        parse_bool,
        "Run the EventSub hub; bots get `--eventsub hub --hub-socket SOCK` and start once "
        "it is ready.",
        "boolean",
        aliases=("--enable-hub",),
    )
    hub_socket: str = setting(
        "hub.socket",
        "/tmp/kissbot_hub.sock",
        path_text,
        "The hub's IPC socket.",
        "path",
        aliases=("--hub-socket",),
    )
    hub_command: tuple[str, ...] | None = setting(
        "hub.command",
        None,
        argv,
        "The hub's argv, with the same placeholders as `bot.command`. Absent: "
        "`{python} eventsub_hub.py --config CFG --db DB --socket SOCK`.",
        "list of strings",
        flag=False,
    )
    hub_ready: str = setting(
        "hub.ready",
        "protocol",
        choice(*READY_HUB),
        "When the hub counts as ready, so that the bots start: `protocol` (a hello + ping "
        "on its socket gets its pong, exactly what a bot needs of it), `db` (its socket "
        "accepts and `hub_state.ws_state` is `connected` in the token DB, read-only), "
        "`socket` (its socket accepts a connection), `notify` (sd_notify READY=1), `none`. "
        "`protocol` is the default because it is the only one that proves the hub serves "
        "bots: the real hub binds its socket before it connects to Twitch, and without "
        "Twitch it accepts connections but answers nothing, so `socket` would call it "
        "ready; `db` needs the DB and can be fooled by a `connected` left behind by a "
        "killed hub until the new one writes `connecting`. A hub that does not become "
        "ready stays starting, with the reason in status, until `hub.start_timeout_sec`.",
        "one of: " + ", ".join(READY_HUB),
    )
    hub_token_login: str = setting(
        "hub.token_login",
        "el_serda",
        twitch_login,
        "The login whose `broadcaster` token the hub loads: KissBot's hub hard-codes "
        '`el_serda`, whatever the config says, and exits 1 without that token ("No '
        'broadcaster token found for el_serda"). The token gate checks this token for '
        "the hub, in the token DB, which the hub reads in YAML token mode too. Change it "
        "only for a hub patched to load another login's token.",
        "Twitch login",
    )
    hub_credential: bool = setting(
        "hub.credential",
        False,
        parse_bool,
        "Like `bot.credential`, for the hub (its `broadcaster` token, of "
        "`hub.token_login`). KissBot's hub reads the DB itself.",
        "boolean",
    )
    hub_watchdog_sec: float = setting(
        "hub.watchdog_sec",
        0.0,
        seconds(0, 3600),
        "Like `bot.watchdog_sec`, for the hub.",
        "seconds",
    )
    hub_liveness_sec: float = setting(
        "hub.liveness_sec",
        0.0,
        seconds(0, 3600),
        "0 turns it off. Otherwise, for a hub that sends no watchdog pings (KissBot's own "
        "sends none), the supervisor repeats the `hub.ready` check (`protocol`, or `db`; "
        "`protocol` when `hub.ready` is another mode) this often while the hub runs, and "
        "a hub that fails 3 checks in a row (it stopped answering, or lost Twitch) is "
        "killed and restarted, like a watchdog timeout. At least 3 s; a slow pace (e.g. 60) "
        "is enough. Not together with `hub.watchdog_sec`.",
        "seconds",
    )
    hub_oom_score_adjust: int = setting(
        "hub.oom_score_adjust",
        200,
        integer(-1000, 1000),
        "Like `bot.oom_score_adjust`, for the hub: below the bots, since every bot needs it.",
        "integer",
    )
    hub_start_timeout_sec: float = setting(
        "hub.start_timeout_sec",
        30.0,
        seconds(0, 3600),
        "Like `bot.start_timeout_sec`, for the hub.",
        "seconds",
    )
    hub_restart_bots: bool = setting(
        "hub.restart_bots",
        True,
        parse_bool,
        "Restart the running bots once a restarted hub is ready again: KissBot's hub client "
        "connects only once, so without this the bots never see EventSub events again.",
        "boolean",
    )
    restart_mode: str = setting(
        "restart.mode",
        "on-failure",
        choice("on-failure", "always"),
        "`on-failure` restarts a process that crashed, was killed or exited non-zero (an exit "
        "with status 0 or by SIGTERM/SIGINT/SIGHUP/SIGPIPE leaves it stopped, as systemd "
        "does); `always` restarts after any exit the supervisor did not ask for.",
        "one of: on-failure, always",
    )
    restart_delay_sec: float = setting(
        "restart.delay_sec",
        1.0,
        seconds(0, 3600),
        "Delay before the first restart after a failure; it doubles with each consecutive failure.",
        "seconds",
    )
    restart_max_delay_sec: float = setting(
        "restart.max_delay_sec",
        60.0,
        seconds(0, 86_400),
        "Upper bound of the restart delay.",
        "seconds",
    )
    restart_reset_after_sec: float = setting(
        "restart.reset_after_sec",
        60.0,
        seconds(0, 86_400),
        "Failures older than this are forgotten, and a process up this long starts again "
        "from the first delay.",
        "seconds",
    )
    restart_give_up_after: int = setting(
        "restart.give_up_after",
        5,
        integer(0, 10_000),
        "Consecutive failures within `restart.reset_after_sec` after which the process is "
        "parked as failed (with the reason in status), until an operator starts it or "
        "`restart.retry_parked_sec` tries it again; 0 never gives up.",
        "whole number",
    )
    restart_retry_parked_sec: float = setting(
        "restart.retry_parked_sec",
        120.0,
        seconds(0, 86_400),
        "A parked process (see `restart.give_up_after`) is tried again by itself after this "
        "long, once; if that try fails it is parked again for twice as long, up to "
        "`restart.retry_parked_max_sec`, for as long as it takes: a network outage heals by "
        "itself. Not while its token is known bad (it starts once the DB is fixed). 0: "
        "parked until an operator starts it.",
        "seconds",
    )
    restart_retry_parked_max_sec: float = setting(
        "restart.retry_parked_max_sec",
        900.0,
        seconds(0, 86_400),
        "The longest wait between two tries of a parked process.",
        "seconds",
    )
    logs_dir: str = setting(
        "logs.dir",
        "logs/supervisor",
        path_text,
        "Where the native backend writes one log file per process, and the supervisor's "
        "own (kissbot-supervisor.log), relative to the workdir.",
        "path",
    )
    logs_max_bytes: int = setting(
        "logs.max_bytes",
        10 * 1024 * 1024,
        integer(4096, 2**40),
        "Size at which a process's log file is rotated.",
        "bytes",
    )
    logs_backups: int = setting(
        "logs.backups",
        3,
        integer(0, 100),
        "How many rotated log files to keep per process.",
        "whole number",
    )
    metrics_path: str | None = setting(
        "metrics.path",
        None,
        optional_path,
        "A JSON-lines metrics log, relative to the workdir: one object per "
        "`metrics.interval_sec` with the supervisor's and every process's figures (see "
        "docs/operations.md). Appended to, reopened at each write (rotate it freely). "
        "Absent: no log, and no periodic wake-up.",
        "path",
    )
    metrics_interval_sec: float = setting(
        "metrics.interval_sec",
        60.0,
        seconds(1, 86_400),
        "How often a line goes to `metrics.path`.",
        "seconds",
    )
    metrics_listen: str | None = setting(
        "metrics.listen",
        None,
        optional_listen,
        "Serve `GET /metrics` (Prometheus text format) on `127.0.0.1:PORT`, `[::1]:PORT` or "
        "`unix:/path`. Only literal IP addresses; one that is not loopback (e.g. "
        "`0.0.0.0:9101`) is served as written, with a warning in the log. Absent: no listener.",
        "address",
    )
    on_failure: tuple[str, ...] | None = setting(
        "on_failure",
        None,
        argv,
        "A command (a list, no shell) run when a process fails: each crash, failed start or "
        "timeout that puts it in backoff, and its parking. It gets `KISSBOT_*` variables "
        "(see docs/operations.md), never a token; at most 4 run at once, extras are skipped "
        "and logged. Absent: none.",
        "list of strings",
        flag=False,
    )
    on_failure_timeout_sec: float = setting(
        "on_failure_timeout_sec",
        30.0,
        seconds(1, 3600),
        "An `on_failure` command still running after this long is killed (its whole "
        "process group).",
        "seconds",
        flag=False,
    )
    file_commands: bool = setting(
        "file_commands",
        True,
        parse_bool,
        "Answer KissBot's command files, like the old supervisor: `start CH`, `stop CH`, "
        "`restart CH` or `status` written to `pids/supervisor.cmd` gets its reply in "
        "`pids/supervisor.result` (see docs/operations.md). Off: the files are not watched.",
        "boolean",
        flag=False,
    )
    broadcast_relay: bool = setting(
        "broadcast_relay",
        True,
        parse_bool,
        "Relay KissBot's chat broadcasts, like the old supervisor: each "
        "`UNIX_TS|SOURCE_CHANNEL|MESSAGE` line written to `pids/supervisor.broadcast` goes to "
        "`pids/CH.broadcast_in` of every running bot but the source. Off: the file is not "
        "watched.",
        "boolean",
        flag=False,
    )

    systemd_user: str | None = setting(
        "systemd.user",
        None,
        optional_user_name,
        "systemd backend: the user the hub and bot units run as (`User=`). Absent: root, "
        "without any capability when `systemd.hardening` is on, so the workdir's files must "
        "then be owned by root (or set this to their owner).",
        "user name",
    )
    systemd_group: str | None = setting(
        "systemd.group",
        None,
        optional_user_name,
        "systemd backend: the group of the units (`Group=`). Absent: the user's primary group.",
        "group name",
    )
    systemd_slice: str = setting(
        "systemd.slice",
        "kissbot.slice",
        slice_name,
        "systemd backend: the slice every unit runs in; its memory and task limits cap the "
        "whole fleet. Created as a transient slice when no unit file of that name is installed.",
        "slice name",
    )
    systemd_memory_max: int | None = setting(
        "systemd.memory_max",
        None,
        optional_bytes_size,
        "systemd backend: `MemoryMax=` of the slice, for the whole fleet: bytes, or a number "
        "with K, M, G or T (powers of 1024), e.g. `2G`. Absent: no limit.",
        "bytes",
    )
    systemd_tasks_max: int | None = setting(
        "systemd.tasks_max",
        None,
        optional_integer(1, 2**31),
        "systemd backend: `TasksMax=` of the slice (processes and threads of the whole fleet). "
        "Absent: systemd's default.",
        "whole number",
    )
    systemd_hardening: bool = setting(
        "systemd.hardening",
        True,
        parse_bool,
        "systemd backend: sandbox the units (read-only system and homes except the workdir "
        "and the hub socket's directory, no capabilities, a system-call filter, ...; see "
        "`systemd/units.py`). Turn off only to find out whether the sandbox breaks a bot.",
        "boolean",
        flag=False,
    )
    systemd_read_write_paths: tuple[str, ...] = setting(
        "systemd.read_write_paths",
        (),
        absolute_paths,
        "systemd backend, with hardening: more absolute paths the units may write to, besides "
        "the workdir, the DB's directory and the hub socket's directory.",
        "list of paths",
        flag=False,
    )


def declarations() -> Iterator[tuple[str, Any, SettingMeta]]:
    """(field name, default, declaration) for every setting, in table order."""
    metadata: dict[str, dict[str, Any]] = Settings.__record_metadata__  # type: ignore[attr-defined]
    defaults: dict[str, Any] = Settings.__record_defaults__  # type: ignore[attr-defined]
    for name in fields(Settings):
        yield name, defaults[name], metadata[name]["setting"]


def describe_default(default: object) -> str:
    if default is None:
        return "(see text)"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float) and default == int(default):
        return str(int(default))
    if isinstance(default, Sequence) and not isinstance(default, str):
        return "[" + ", ".join(map(str, default)) + "]"
    return str(default)
