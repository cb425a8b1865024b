"""The sd_notify protocol, served to our children the way systemd serves it.

One datagram socket per supervisor, passed to children as ``NOTIFY_SOCKET``.
``SO_PASSCRED`` makes the kernel attach the sender's PID to every datagram,
so a process can only speak for itself (systemd's ``NotifyAccess=main``): a
datagram from a PID that is not one of our main PIDs is dropped.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

from ...core.records import record
from ...runtime.fs import bind_unix

_UCRED = struct.Struct("iII")  # pid, uid, gid
MAX_DATAGRAM = 4096


@record
class Notification:
    pid: int
    fields: dict[str, str]


def parse_message(data: bytes) -> dict[str, str]:
    """``b"READY=1\\nSTATUS=ok"`` -> ``{"READY": "1", "STATUS": "ok"}``; junk lines dropped."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", errors="replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key and key.isascii() and key.replace("_", "").isalnum():
            fields[key] = value
    return fields


class NotifyServer:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        # Children may run as another user (systemd backend with User=); a datagram
        # socket needs write permission to be sent to. Credentials decide, not modes.
        bind_unix(self.sock, path, 0o666)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, deliver: Callable[[Notification], None]) -> None:
        """Read every pending datagram and hand the well-formed ones to ``deliver``."""
        fd_size = array.array("i").itemsize
        ancillary = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(16 * fd_size)
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(MAX_DATAGRAM, ancillary)
            except (BlockingIOError, InterruptedError):
                return
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack_from(payload)[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    # FDSTORE is not supported: close what was sent, leak nothing.
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fd_size])
                    for fd in fds:
                        os.close(fd)
            if pid is not None and data:
                deliver(Notification(pid, parse_message(data)))

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
