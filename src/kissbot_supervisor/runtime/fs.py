"""Files in directories others can write: one rule, applied wherever the supervisor goes there.

The KissBot checkout (the workdir) belongs to the bots' user, and a bot is
internet-facing code that may be taken over: anything in it may have been
replaced by a symlink, a FIFO or a hard link by the time the supervisor (as
root, or as its own user) opens it. So every file there is reached like this:

* from a trusted ``base`` (the workdir itself, which its owner cannot swap:
  its parent is not theirs), one directory at a time, never following a
  symlink (``O_NOFOLLOW | O_DIRECTORY``): ``pids -> /etc`` is refused, not
  followed;
* the file itself opened with ``O_NOFOLLOW | O_NONBLOCK`` and used only if
  ``fstat`` says it is a regular file: a FIFO planted where a file is
  expected is refused at once instead of hanging the daemon, a symlink to a
  root-only file is refused instead of read or written;
* written by creating a new file under an unpredictable name (``O_EXCL``),
  ``fchmod`` on that new inode, then renaming it into place: an existing
  inode (a hard link to a root-owned file) is never truncated or chmod-ed.

Paths outside ``base`` (an absolute ``metrics.path`` under /var/lib, say) are
the administrator's: their directories are trusted, the file itself is
checked all the same.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotRegularFile(OSError):
    """Something else than a regular file (a FIFO, a device, a directory) where one was expected."""

    def __init__(self, path: Path, mode: int) -> None:
        kind = _kind(mode)
        super().__init__(errno.EINVAL, f"is a {kind}, not a regular file", str(path))


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def open_dir(
    directory: Path,
    base: Path | None,
    *,
    create: bool = False,
    owner: tuple[int, int] | None = None,
) -> int:
    """A descriptor of ``directory``, reached from ``base`` without following a symlink;
    ``create`` makes the missing directories on the way (0755 whatever the umask,
    and given to ``owner``, a (UID, GID), when set), each below the last.

    With no ``base``, or a ``directory`` outside it, the path is trusted as it is.
    Raises OSError (ELOOP or ENOTDIR when a component is a symlink or a file).
    """
    if base is None or not directory.is_relative_to(base):
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in directory.relative_to(base).parts:
            made = False
            if create:
                # mkdirat below a descriptor: never in a directory a symlink points at
                # (a bot's ``logs -> /etc`` would have root make ``/etc/supervisor``).
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    made = True
                except FileExistsError:
                    pass
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
            if made:
                # On the descriptor: whatever was swapped in meanwhile is a directory we
                # reached without a symlink; an existing one is never changed.
                os.fchmod(fd, 0o755)
                if owner is not None:
                    os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_dirs(
    directory: Path,
    base: Path | None,
    *,
    symlink_ok: bool = False,
    owner: tuple[int, int] | None = None,
) -> None:
    """``mkdir -p directory`` by the module's rule (see :func:`open_dir`).

    ``symlink_ok``: a symlink on the way is left alone instead of an error (a
    caller whose every later use of the directory refuses it by the same rule).
    """
    try:
        os.close(open_dir(directory, base, create=True, owner=owner))
    except OSError as e:
        # O_NOFOLLOW | O_DIRECTORY says ENOTDIR (or ELOOP) for a symlink: which it was,
        # lstat tells, and only a symlink is let pass.
        if not (symlink_ok and e.errno in (errno.ELOOP, errno.ENOTDIR)):
            raise
        parts = directory.relative_to(base).parts if base is not None else ()
        prefixes = [base.joinpath(*parts[: i + 1]) for i in range(len(parts))] if base else []
        if not any(p.is_symlink() for p in prefixes):
            raise


def open_regular(
    path: Path, flags: int = os.O_RDONLY, mode: int = 0o600, *, base: Path | None = None
) -> int:
    """A descriptor of the regular file ``path`` (see the module's rule), in blocking mode."""
    dir_fd = open_dir(path.parent, base)
    try:
        fd = os.open(path.name, flags | FILE_FLAGS, mode, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(path, st.st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, limit: int, *, base: Path | None = None) -> bytes:
    """Up to ``limit + 1`` bytes of the regular file ``path``: more than ``limit``
    tells the caller it is too big, without reading a huge file whole."""
    return read_with_stat(path, limit, base=base)[0]


def read_with_stat(
    path: Path, limit: int, *, base: Path | None = None
) -> tuple[bytes, os.stat_result]:
    """:func:`read_regular`, and the ``fstat`` of the very file that was read."""
    fd = open_regular(path, base=base)
    try:
        return read_fd(fd, limit), os.fstat(fd)
    finally:
        os.close(fd)


def others_can_write(path: Path, st: os.stat_result) -> str | None:
    """Why a user other than root or this process's could change what ``path`` holds
    (``st``: the ``fstat`` of the file as it was read), or None when nobody can.

    The rule of sudo's and OpenSSH's strict modes: the file and every directory
    above its real path belong to root or to us, and none is writable by group
    or others, except a sticky directory (``/tmp``), where others cannot rename
    or remove what is ours. The walk uses the resolved path; since no directory
    on it is anyone else's, nobody else can make the path resolve elsewhere.
    """
    trusted = {0, os.geteuid()}

    def problem(what: str, where: os.stat_result, *, sticky_ok: bool) -> str | None:
        if where.st_uid not in trusted:
            return f"{what} belongs to {_user(where.st_uid)}"
        if where.st_mode & 0o022 and not (sticky_ok and where.st_mode & stat.S_ISVTX):
            who = "everyone" if where.st_mode & 0o002 else f"the group {_group(where.st_gid)}"
            return f"{what} is writable by {who} (mode {stat.S_IMODE(where.st_mode):04o})"
        return None

    found = problem(f"the file {path}", st, sticky_ok=False)
    if found is not None:
        return found
    real = Path(os.path.realpath(path.parent))
    for directory in (*reversed(real.parents), real):
        try:
            dir_st = os.stat(directory)
        except OSError as e:
            return f"its directory {directory} cannot be checked ({e.strerror})"
        found = problem(f"its directory {directory}", dir_st, sticky_ok=True)
        if found is not None:
            return found
    return None


def _user(uid: int) -> str:
    import pwd  # lazy: only a refusal names the user

    try:
        return f"the user {pwd.getpwuid(uid).pw_name} (UID {uid})"
    except KeyError:
        return f"UID {uid}"


def _group(gid: int) -> str:
    import grp

    try:
        return f"{grp.getgrgid(gid).gr_name} (GID {gid})"
    except KeyError:
        return f"GID {gid}"


def read_fd(fd: int, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes from ``fd``."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def write_atomically(
    path: Path, data: str | bytes, mode: int = 0o644, *, base: Path | None = None
) -> None:
    """Replace ``path`` with ``data`` at once: a reader sees the old file, none, or
    the whole new one; the file is always a new inode of ours (see the module's rule)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    dir_fd = open_dir(path.parent, base)
    try:
        tmp = f".{path.name}.{os.urandom(6).hex()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
        try:
            os.fchmod(fd, mode)  # the umask (0077 under systemd) is not what readers need
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.close(fd)
            fd = -1
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)


def base_of(path: Path, workdir: Path) -> Path | None:
    """``workdir`` when ``path`` lies inside it (the bots' user's), else None (trusted)."""
    return workdir if path.is_relative_to(workdir) else None


def ensure_private_dir(directory: Path) -> None:
    """Make ``directory`` (0700) if missing; refuse one that is not ours alone.

    A runtime directory in a shared place (``/dev/shm``) can be made first by
    another user, who could then replace our sockets and answer for us: a
    directory that is a symlink, not owned by our user, or writable by group
    or others is refused, with a sentence saying which and what to do.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(directory)
    problem = None
    if not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory (a symlink?)"
    elif st.st_uid != os.geteuid():
        problem = f"belongs to UID {st.st_uid}, not to this supervisor's UID {os.geteuid()}"
    elif st.st_mode & 0o022:
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}: others can write in it"
    if problem is not None:
        raise PermissionError(
            f"the runtime directory {directory} {problem}; another user may have made "
            "it to take this supervisor's sockets: remove it, or give --runtime-dir a "
            "directory of this user's alone"
        )


def bind_unix(sock: socket.socket, path: Path, mode: int, gid: int | None = None) -> None:
    """Bind ``sock`` at ``path`` created with ``mode`` at once (through the umask), and
    give it group ``gid`` without following a symlink: nothing is ever changed by
    path after the bind, where a swapped-in symlink would redirect a chmod."""
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    if gid is not None:
        os.chown(path, -1, gid, follow_symlinks=False)
