"""Helpers shared by the agent tests (not a conftest, so other test trees cannot shadow it)."""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from memu_firstboot.setup_token import ensure_token


@dataclass
class NotifySocket:
    """A listening AF_UNIX SOCK_DGRAM socket, as systemd's NOTIFY_SOCKET."""

    address: str  # the $NOTIFY_SOCKET value ("/path" or "@name")
    sock: socket.socket

    def recv(self, timeout: float = 5.0) -> dict[str, str]:
        """Next datagram as a dict of KEY=VALUE lines; raises TimeoutError."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def recv_until(self, key: str, timeout: float = 5.0) -> list[dict[str, str]]:
        """All datagrams up to and including the first with ``key``."""
        seen = []
        while True:
            msg = self.recv(timeout)
            seen.append(msg)
            if key in msg:
                return seen


def bind_notify_socket(address: str, bind_to: str) -> NotifySocket:
    """Bind a datagram socket at ``bind_to``; ``address`` is what goes in NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(bind_to)
    return NotifySocket(address=address, sock=sock)


def efi_string(text: str) -> bytes:
    """An efivarfs file: 4 bytes of attributes, then UTF-16LE with a NUL terminator."""
    return struct.pack("<I", 7) + (text + "\0").encode("utf-16-le")


def code_header(state_dir: Path) -> dict[str, str]:
    """The header that proves the setup code of the box whose state is in ``state_dir``
    (made there if missing, as the agent does at start)."""
    return {"X-Memu-Setup-Code": ensure_token(state_dir)}


#: A CSRF token as the box's pages hand out (memu_agent.csrf), for requests with a session.
CSRF_TOKEN = "t" * 43


def session_headers(session: str) -> dict[str, str]:
    """Headers for a state-changing request with the browser session ``session``: the
    cookie, and the CSRF cookie + header pair the box's pages would have given."""
    return {"Cookie": f"memu_session={session}; memu_csrf={CSRF_TOKEN}",
            "X-Memu-CSRF": CSRF_TOKEN}


def csrf_of(page: str) -> str:
    """The CSRF token of the first form in an HTML ``page``."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)
