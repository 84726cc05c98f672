"""The sd_notify protocol, spoken directly (no libsystemd, no extra package).

Protocol, from sd_notify(3) and systemd's "$NOTIFY_SOCKET" documentation
(https://systemd.io/NOTIFY_SOCKET/ and ``man 3 sd_notify``):

* the service manager passes the socket address in ``$NOTIFY_SOCKET``; when it is unset the
  service is not supervised and every notification is a no-op;
* an address starting with ``/`` is a filesystem ``AF_UNIX`` socket, one starting with ``@``
  is in the abstract namespace (the ``@`` becomes a leading NUL byte);
* each notification is one ``SOCK_DGRAM`` datagram of newline-separated ``KEY=VALUE``
  assignments, e.g. ``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1``;
* ``$WATCHDOG_USEC`` (microseconds) asks for ``WATCHDOG=1`` at least that often
  (sd_watchdog_enabled(3) recommends every half of it); when ``$WATCHDOG_PID`` is set, the
  request is only for the process with that PID.

``vsock:`` addresses (systemd 254+, for VMs) are not supported and are treated as unset.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

_SEND_TIMEOUT_S = 2.0


def socket_address(value: str | None) -> str | None:
    """Turn a ``$NOTIFY_SOCKET`` value into an address for ``socket.sendto``.

    Returns:
        The path (``/…``), the abstract name with a leading NUL (for ``@…``), or None when
        the value is unset, empty or of a kind we do not speak (e.g. ``vsock:``).
    """
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``, in seconds: half of ``$WATCHDOG_USEC``.

    Args:
        env: the environment to read ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from.
        pid: our process id (default: ``os.getpid()``).

    Returns:
        The interval in seconds, or None when no watchdog is requested for this process
        (unset, not a positive integer, or ``WATCHDOG_PID`` names another process).
    """
    usec = env.get("WATCHDOG_USEC", "")
    want_pid = env.get("WATCHDOG_PID", "")
    if want_pid:
        try:
            if int(want_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000 / 2


class Notifier:
    """Sends sd_notify messages to the service manager; a no-op when not supervised.

    Args:
        env: the environment to read ``$NOTIFY_SOCKET`` from (default: ``os.environ``).
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        environ = os.environ if env is None else env
        self._address = socket_address(environ.get("NOTIFY_SOCKET"))
        self._sock: socket.socket | None = None
        if environ.get("NOTIFY_SOCKET") and self._address is None:
            log.warning(
                "NOTIFY_SOCKET=%s is not a unix socket; not notifying", environ["NOTIFY_SOCKET"]
            )

    @property
    def enabled(self) -> bool:
        """True when there is a service manager to notify."""
        return self._address is not None

    def notify(self, **fields: str) -> bool:
        """Send one datagram with ``KEY=VALUE`` lines, e.g. ``notify(READY="1", STATUS="…")``.

        Newlines in values are replaced by spaces (the protocol is line-based).

        Returns:
            True when the datagram was sent, False when not supervised or sending failed
            (the failure is logged; a daemon must not die because its supervisor is busy).
        """
        if self._address is None:
            return False
        message = "\n".join(f"{key}={value.replace(chr(10), ' ')}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(_SEND_TIMEOUT_S)
            self._sock.sendto(message.encode("utf-8"), self._address)
        except OSError as e:
            log.warning("cannot notify the service manager (%s): %s", message.splitlines()[0], e)
            return False
        return True

    def status(self, text: str) -> bool:
        """Send ``STATUS=<text>``: one line a person reads in ``systemctl status``."""
        return self.notify(STATUS=text)

    def close(self) -> None:
        """Close the socket (further notifications reopen it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
