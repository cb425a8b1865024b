"""Any process can listen on the hub's socket path first: only the hub's own
listener makes it ready, so the bots never say hello to an impostor."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from process.harness import fleet_config

from .conftest import StartFleet


class Impostor:
    """A listener on the hub's path that records what anyone sends it."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(64)
        self.heard: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(5)
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            if data:
                self.heard.append(data)
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_a_listener_that_is_not_the_hubs_never_makes_it_ready(
    start_fleet: StartFleet, workdir: Path
) -> None:
    impostor = Impostor(workdir / "hub.sock")
    try:
        # The hub binds (replacing the impostor's socket, as upstream does) 2 s after
        # its start: until then, only the impostor answers on the path.
        doc = fleet_config(["hello_chan"], hub=True, hub_extra=["--listen-delay", "2"])
        sup = start_fleet(doc, give=False)
        sup.wait_for(r"hub: .*hub\.sock answers, but from PID \d+, not from this process")
        sup.wait_for(r"hub: ready")
        sup.wait_for(r"hello_chan: ready")
        assert impostor.heard == []  # no bot said hello to it
        assert sup.bot("hello_chan")["state"] == "running"
    finally:
        impostor.close()


def test_status_says_who_holds_the_hubs_socket_path(start_fleet: StartFleet, workdir: Path) -> None:
    impostor = Impostor(workdir / "hub.sock")
    try:
        # This hub never binds: it stays starting, and status says why.
        doc = fleet_config(["waiting_chan"], hub=True, hub_extra=["--listen-delay", "600"])
        sup = start_fleet(doc, give=False)
        sup.wait_for(r"hub: .*hub\.sock answers, but from PID \d+")
        hub = sup.status()["hub"]
        assert hub["state"] == "starting"
        assert f"{workdir / 'hub.sock'} is held by PID {os.getpid()}" in hub["reason"]
        assert sup.bot("waiting_chan")["pid"] is None  # no bot starts towards it
    finally:
        impostor.close()
