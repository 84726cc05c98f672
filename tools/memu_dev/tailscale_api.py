"""An in-process stand-in for tailscaled's LocalAPI status, for the unit tests: the Tailscale
image is a registry image that cannot be fetched here. It answers ``GET
/localapi/v0/status`` on a Unix socket with the fields the real one has
(tailscale.com/ipn/ipnstate.Status: BackendState, Self, CertDomains, Health) and, as
tailscaled does, only for the Host ``local-tailscaled.sock``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from memu_firstboot import remote

#: A box connected to a tailnet that gives it certificates (MagicDNS and HTTPS on).
RUNNING: dict[str, Any] = {"BackendState": "Running",
                           "Self": {"HostName": "memu", "DNSName": "memu.tail1234.ts.net."},
                           "CertDomains": ["memu.tail1234.ts.net"]}
#: A box connected to a tailnet whose admin has not turned on HTTPS certificates.
NO_CERTIFICATES: dict[str, Any] = {"BackendState": "Running",
                                   "Self": {"HostName": "memu",
                                            "DNSName": "memu.tail1234.ts.net."}}


class LocalApi:
    """tailscaled's LocalAPI status, answering ``states`` one after another (the last
    repeats)."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states = states
        self.asked = 0

    async def status(self, request: web.Request) -> web.Response:
        if request.host != remote.LOCALAPI_HOST:
            return web.Response(status=403, text="invalid localapi Host header")
        body = self.states[min(self.asked, len(self.states) - 1)]
        self.asked += 1
        return web.json_response(body)

    async def serve(self, socket: Path) -> web.AppRunner:
        """Answer on the Unix socket ``socket``; the caller cleans the runner up."""
        app = web.Application()
        app.router.add_get("/localapi/v0/status", self.status)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, str(socket)).start()
        return runner
