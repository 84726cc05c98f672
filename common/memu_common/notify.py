"""The listening end of sd_notify: a socket a child process (``systemd-sysupdate``,
``systemd-run --pipe``) can send its status datagrams to.

Protocol (sd_notify(3), https://systemd.io/NOTIFY_SOCKET/): the child finds an
``AF_UNIX``/``SOCK_DGRAM`` socket address in ``$NOTIFY_SOCKET`` and sends datagrams of
newline-separated ``KEY=VALUE`` lines. We bind such a socket, hand its path to the child,
and pass each parsed datagram to a callback as it arrives, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

NotifyCallback = Callable[[dict[str, str]], None]
_MAX_SUN_PATH = 107  # sockaddr_un.sun_path is 108 bytes including the NUL


def parse_notify(datagram: bytes) -> dict[str, str]:
    """One notify datagram as a dict (``b"A=1\\nB=x"`` → ``{"A": "1", "B": "x"}``); lines
    without ``=`` and undecodable bytes are dropped."""
    text = datagram.decode("utf-8", errors="replace")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class NotifyListener:
    """A bound notify socket in ``directory`` that feeds datagrams to ``callback``.

    Use as an async context manager; ``address`` is the ``$NOTIFY_SOCKET`` value. A path
    too long for ``sun_path`` falls back to the abstract namespace.
    """

    def __init__(self, directory: Path, callback: NotifyCallback) -> None:
        self._callback = callback
        path = directory / f"notify-{uuid.uuid4().hex[:12]}"
        self._path: Path | None = path
        self.address = str(path)
        if len(os.fsencode(path)) > _MAX_SUN_PATH:
            self._path = None
            self.address = f"@memu-ota-{uuid.uuid4().hex}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    def _drain(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("notify socket: %s", e)
                return
            self._callback(parse_notify(data))

    async def __aenter__(self) -> NotifyListener:
        if self._path is not None:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._sock.bind(str(self._path))
        else:
            self._sock.bind("\0" + self.address[1:])
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._drain)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._drain()  # whatever arrived before the child exited
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()
