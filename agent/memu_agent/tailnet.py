"""The box's HTTPS address on the family's tailnet, as the agent's pages and front door need it.

With remote access on, the stack's Tailscale serves ``https://<box>.<tailnet>.ts.net`` with
its own certificate and proxies it to the agent's port 80 on loopback
(:func:`memu_firstboot.stack_config.tailscale_serve_config`), keeping the ``Host`` asked for
and adding ``X-Forwarded-Proto: https`` (tailscale.com/ipn/ipnlocal/serve.go). The agent asks
tailscaled's LocalAPI (:mod:`memu_firstboot.remote`) every :data:`POLL_S` seconds and keeps
the address it last saw (:class:`Tailnet`), so that:

- the auth layer accepts that name as a ``Host`` (besides the box's own names and IPs);
- a request that came through Tailscale's HTTPS counts as secure (:func:`https_middleware`,
  trusting ``X-Forwarded-Proto`` from loopback only, where tailscaled connects from): the
  session cookies get ``Secure``;
- the chat discovery and the chat client's configuration, asked for by that name, give
  ``https://<name>`` as the homeserver (:func:`base_url_for`, used by the front door): phone
  apps and Element on the tailnet then talk to the box over HTTPS, not to
  ``http://memu.local``, which they cannot reach away from home.

Nothing changes while remote access is off: no socket, no address.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from memu_agent import background
from memu_agent.auth import host_name
from memu_agent.front_door import BASE_URL
from memu_common.access import Handler
from memu_firstboot import remote

log = logging.getLogger(__name__)

#: Seconds between two questions to the LocalAPI (an answer takes milliseconds; a missing
#: socket fails at once).
POLL_S = 30.0


@dataclass
class Tailnet:
    """What the agent knows of the tailnet.

    Attributes:
        socket: tailscaled's LocalAPI socket (:data:`memu_firstboot.remote.SOCKET`).
        poll_s: seconds between two questions.
        address: the box's HTTPS address, once seen; kept while tailscaled restarts or is
            briefly unreachable (a stale name only means the agent still answers to it).
    """

    socket: Path = remote.SOCKET
    poll_s: float = POLL_S
    address: remote.Address | None = None

    def names(self) -> tuple[str, ...]:
        """The host names this adds to the box's own: its tailnet name, or none."""
        return (self.address.name,) if self.address else ()

    async def refresh(self) -> remote.Address | None:
        """Ask the LocalAPI once and keep a new address; return the one now kept."""
        seen = remote.address(await remote.status(self.socket))
        if seen is not None and seen != self.address:
            log.info("remote access: the box is %s", seen.url)
            self.address = seen
        return self.address


TAILNET = web.AppKey("memu_agent.tailnet", Tailnet)


def _loopback(peer: str | None) -> bool:
    try:
        return peer is not None and ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


@web.middleware
async def https_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request Tailscale's HTTPS brought (``X-Forwarded-Proto: https`` from a loopback
    peer) continues with the ``https`` scheme, so ``request.secure`` is true. From any
    other peer the header is ignored: on the LAN anyone can send it."""
    if (request.headers.get("X-Forwarded-Proto", "").strip().lower() == "https"
            and _loopback(request.remote)):
        request = request.clone(scheme="https")
    return await handler(request)


def base_url_for(request: web.Request) -> str | None:
    """``https://<name>`` when ``request`` asked for the box by its tailnet name; else None
    (the stack's own answer stands)."""
    address = request.app[TAILNET].address
    if address is None or host_name(request.host).lower().rstrip(".") != address.name:
        return None
    return address.url


def remote_url(request: web.Request) -> str:
    """The box's HTTPS address on the tailnet for the pages, or "" while none is known."""
    address = request.app[TAILNET].address if TAILNET in request.app else None
    return address.url if address else ""


def add(app: web.Application, tailnet: Tailnet) -> None:
    """Keep ``tailnet``'s address fresh while ``app`` runs and let the front door use it."""
    app[TAILNET] = tailnet
    app[BASE_URL] = base_url_for
    background.repeat(app, "asking Tailscale for the box's address", tailnet.refresh,
                      lambda: tailnet.poll_s)

