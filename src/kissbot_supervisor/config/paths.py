"""Where the supervisor keeps its runtime files, and where ``kissbotctl`` looks for them.

The daemon and the client both call :func:`default_control_socket`, so with no
flags and no environment they agree on one path. The rules, in order:

1. ``$RUNTIME_DIRECTORY`` (set by systemd for ``RuntimeDirectory=``; the first
   entry when it holds several, colon-separated);
2. ``/run/kissbot-supervisor`` for root when ``/run`` is a tmpfs (a normal
   systemd machine);
3. ``$XDG_RUNTIME_DIR/kissbot-supervisor`` (a user's own, tmpfs, mode 0700);
4. ``/dev/shm/kissbot-supervisor-UID`` (tmpfs nearly everywhere, world-writable,
   so the daemon must create the directory itself with mode 0700).

That is the shared runtime directory. A daemon started by systemd uses
``$RUNTIME_DIRECTORY`` as it is (one service, one supervisor); any other takes a
directory of its own inside the shared one, named after its workdir
(:func:`instance_runtime_dir`), so that two supervisors of two KissBot
checkouts never share a socket. ``kissbotctl`` finds that one from the
current directory or ``--workdir`` (:func:`instance_sockets`).

Only the standard library, and only ``os`` and ``pathlib``: ``kissbotctl``
imports this module and must start fast.
"""

from __future__ import annotations

import os
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: kissbotctl start-up cost
    from collections.abc import Mapping

__all__ = [
    "APP_NAME",
    "CONTROL_SOCKET_ENV",
    "MOUNTINFO",
    "SETTINGS_FILE",
    "SYSTEM_RUNTIME_DIR",
    "default_control_socket",
    "default_runtime_dir",
    "fstype_of",
    "instance_name",
    "instance_runtime_dir",
    "instance_sockets",
    "is_tmpfs",
]

APP_NAME = "kissbot-supervisor"
# The supervisor's own settings, root's (docs/security.md): used when it exists.
SETTINGS_FILE = Path("/etc") / APP_NAME / "supervisor.yaml"
SYSTEM_RUNTIME_DIR = Path("/run") / APP_NAME
CONTROL_SOCKET_ENV = "KISSBOT_CONTROL_SOCKET"
CONTROL_SOCKET_NAME = "control.sock"
MOUNTINFO = Path("/proc/self/mountinfo")


def _unescape_mount_field(field: str) -> str:
    r"""Undo the kernel's octal escapes in mountinfo paths (``\040`` is a space)."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        chunk = field[i : i + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and all(c in "01234567" for c in chunk[1:]):
            out.append(chr(int(chunk[1:], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _is_under(path: str, mount_point: str) -> bool:
    if mount_point == "/":
        return path.startswith("/")
    return path == mount_point or path.startswith(mount_point + "/")


def fstype_of(path: str | os.PathLike[str], mountinfo: str) -> str | None:
    """The filesystem type of the mount holding ``path``, from mountinfo text.

    ``path`` should be absolute and resolved. The mount whose mount point is the
    longest prefix of ``path`` wins; between mounts on the same point, the last
    line wins (it is the one on top). ``None`` when no line matches.
    """
    target = os.fspath(path)
    best_len = -1
    best_type: str | None = None
    for line in mountinfo.splitlines():
        # "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mount_point = _unescape_mount_field(fields[4])
            fstype = fields[sep + 1]
        except (ValueError, IndexError):
            continue  # not a mountinfo line
        if _is_under(target, mount_point) and len(mount_point) >= best_len:
            best_len = len(mount_point)
            best_type = fstype
    return best_type


def is_tmpfs(path: str | os.PathLike[str], *, mountinfo: str | None = None) -> bool:
    """Whether ``path`` lives on a tmpfs, per ``/proc/self/mountinfo``.

    ``mountinfo`` is that file's text (tests pass their own); when it cannot be
    read the answer is ``False``, which only makes callers pick a later default.
    """
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            return False
    resolved = os.path.realpath(os.fspath(path))
    return fstype_of(resolved, mountinfo) == "tmpfs"


def _env_path(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(key, "")
    return value if value else None


def default_runtime_dir(
    env: Mapping[str, str] | None = None,
    uid: int | None = None,
    *,
    mountinfo: str | None = None,
) -> Path:
    """The supervisor's runtime directory by the rules in the module docstring.

    ``env`` defaults to ``os.environ``, ``uid`` to the effective user ID, and
    ``mountinfo`` to the text of ``/proc/self/mountinfo``.
    """
    if env is None:
        env = os.environ
    if uid is None:
        uid = os.geteuid()
    runtime_directory = _env_path(env, "RUNTIME_DIRECTORY")
    if runtime_directory is not None:
        first = runtime_directory.split(":", 1)[0]
        if first:
            return Path(first)
    if uid == 0 and is_tmpfs("/run", mountinfo=mountinfo):
        return SYSTEM_RUNTIME_DIR
    xdg = _env_path(env, "XDG_RUNTIME_DIR")
    if xdg is not None:
        return Path(xdg) / APP_NAME
    return Path("/dev/shm") / f"{APP_NAME}-{uid}"


def default_control_socket(
    env: Mapping[str, str] | None = None,
    uid: int | None = None,
    *,
    mountinfo: str | None = None,
) -> Path:
    """``$KISSBOT_CONTROL_SOCKET`` if set, else ``default_runtime_dir()/control.sock``."""
    if env is None:
        env = os.environ
    explicit = _env_path(env, CONTROL_SOCKET_ENV)
    if explicit is not None:
        return Path(explicit)
    return default_runtime_dir(env, uid, mountinfo=mountinfo) / CONTROL_SOCKET_NAME


def instance_name(workdir: Path) -> str:
    """The name of a workdir's own runtime directory: its last part (to be read in
    ``ls``) and a checksum of the whole path (two checkouts named alike differ)."""
    import zlib

    path = os.fspath(workdir)
    tail = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in workdir.name)
    return f"{tail[:32] or 'root'}-{zlib.crc32(path.encode('utf-8', 'surrogateescape')):08x}"


def instance_runtime_dir(
    workdir: Path,
    env: Mapping[str, str] | None = None,
    uid: int | None = None,
    *,
    mountinfo: str | None = None,
) -> Path:
    """The daemon's runtime directory when none is given: ``$RUNTIME_DIRECTORY`` as it
    is, else its workdir's own inside the shared one (see the module docstring)."""
    if env is None:
        env = os.environ
    shared = default_runtime_dir(env, uid, mountinfo=mountinfo)
    if _env_path(env, "RUNTIME_DIRECTORY") is not None:
        return shared
    return shared / instance_name(workdir)


def instance_sockets(shared: Path) -> list[Path]:
    """The control sockets of the supervisors that have a directory of their own in
    ``shared`` (running or not: the caller tries them), by name."""
    try:
        entries = sorted(os.scandir(shared), key=lambda e: e.name)
    except OSError:
        return []
    found = []
    for entry in entries:
        socket_path = Path(entry.path) / CONTROL_SOCKET_NAME
        try:
            if entry.is_dir(follow_symlinks=False) and socket_path.is_socket():
                found.append(socket_path)
        except OSError:
            continue
    return found
