"""Back-off for clients that keep presenting wrong credentials, in bounded memory.

Each client (an IPv4 address, or an IPv6 /64, since one host on a LAN can use many IPv6
addresses) may fail ``free`` times; every failure after that makes it wait twice as long
before its next try (``base_s``, ``2 * base_s``, … up to ``max_s``). A success forgets the
client; a client that has not failed for ``forget_s`` is forgotten too. At most
``max_clients`` clients are remembered (the least recently failing is dropped first), so a
flood from many addresses cannot exhaust the agent's memory.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


def client_key(remote: str | None) -> str:
    """The key a request's peer address is counted under: the IPv4 address, the IPv6 /64
    (an IPv4-mapped IPv6 address counts as its IPv4 address), or ``"unknown"``."""
    if not remote:
        return "unknown"
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


@dataclass
class _Record:
    failures: int
    last: float  # when it last failed (clock seconds)
    blocked_until: float


class FailureLimiter:
    """Counts failed credential checks per client and says when a client must wait.

    Args:
        free: failures allowed before any waiting.
        base_s: the first wait, in seconds; each further failure doubles it.
        max_s: the longest wait, in seconds.
        forget_s: a client without failures for this long starts afresh.
        max_clients: how many clients are remembered at most.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        *,
        free: int = 5,
        base_s: float = 1.0,
        max_s: float = 300.0,
        forget_s: float = 3600.0,
        max_clients: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free, self._base, self._max = free, base_s, max_s
        self._forget, self._max_clients, self._clock = forget_s, max_clients, clock
        self._clients: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def retry_after(self, key: str) -> float:
        """Seconds ``key`` must wait before its next try; 0.0 when it may try now."""
        record = self._clients.get(key)
        if record is None:
            return 0.0
        now = self._clock()
        if now - record.last >= self._forget:
            del self._clients[key]
            return 0.0
        return max(0.0, record.blocked_until - now)

    def failed(self, key: str) -> float:
        """Count a failure for ``key``; returns the seconds it must now wait (0.0 if none)."""
        now = self._clock()
        record = self._clients.pop(key, None)
        if record is None or now - record.last >= self._forget:
            record = _Record(failures=0, last=now, blocked_until=now)
        record.failures += 1
        record.last = now
        over = record.failures - self._free
        wait = min(self._max, self._base * 2 ** (over - 1)) if over > 0 else 0.0
        record.blocked_until = now + wait
        self._clients[key] = record  # most recent last
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)
        return wait

    def succeeded(self, key: str) -> None:
        """Forget ``key``'s failures."""
        self._clients.pop(key, None)
