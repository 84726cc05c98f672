"""Remote access at setup: what the box's Tailscale says, in words a parent understands.

The stack's ``tailscale`` service (compose.yaml) logs in with the family's auth key and
serves Tailscale's LocalAPI on a Unix socket that the host sees at :data:`SOCKET`. The
first-boot apply asks it ``GET /localapi/v0/status`` (the API ``tailscale status --json``
uses; its ``BackendState`` is one of NoState, NeedsLogin, NeedsMachineAuth, Stopped,
Starting, Running — tailscale.com/ipn/backend.go) until the box is connected or the answer
is settled, and :func:`judge` turns the answer into the step's result:

    connected          Running: the box's HTTPS address on the tailnet (or, when the
                       tailnet gives no certificates, its name and how to turn them on)
    needs approval     NeedsMachineAuth: the tailnet wants an admin to approve the device
    not logged in      NeedsLogin: the login with the key has not succeeded (the key is
                       mistyped, used or expired, or the box is not online)
    offline            no answer (Tailscale is not on the box yet: it is fetched from the
                       internet) or another state (it cannot reach Tailscale's servers)

None of them fails the setup: the box works on the home network without remote access, and
a Tailscale that could not connect keeps trying on its own. The page says which it is.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

#: The LocalAPI socket of the stack's tailscale container, as the host sees it.
SOCKET = Path("/run/memu-stack/tailscale/tailscaled.sock")
#: tailscaled answers its LocalAPI only for this Host (tailscale.com/client/local).
LOCALAPI_HOST = "local-tailscaled.sock"


class Remote(enum.StrEnum):
    CONNECTED = "connected"
    NEEDS_APPROVAL = "needs approval"
    NOT_LOGGED_IN = "not logged in"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Verdict:
    """What the status means: the state and the sentence for the progress page."""

    state: Remote
    message: str


@dataclass(frozen=True)
class Address:
    """The box's HTTPS address on the family's tailnet.

    Attributes:
        name: its MagicDNS name (``memu.tail1234.ts.net``), which Tailscale has a
            certificate for and serves HTTPS on (the stack's serve config).
    """

    name: str

    @property
    def url(self) -> str:
        return f"https://{self.name}"


def address(status: Mapping[str, Any] | None) -> Address | None:
    """The box's HTTPS address from one LocalAPI status answer: its ``Self.DNSName`` when
    the box is connected (``BackendState`` Running) and the tailnet gives it certificates
    for that name (``CertDomains``, empty unless the tailnet's admin turned on MagicDNS and
    HTTPS certificates: tailscale.com/kb/1153/enabling-https); None otherwise. Pure."""
    if status is None or status.get("BackendState") != "Running":
        return None
    me = status.get("Self") or {}
    name = str(me.get("DNSName", "")).rstrip(".").lower()
    domains = {str(d).rstrip(".").lower() for d in status.get("CertDomains") or []}
    return Address(name) if name and name in domains else None


def judge(status: Mapping[str, Any] | None) -> Verdict:
    """The verdict on one LocalAPI status answer (``None``: no answer). Pure."""
    if status is None:
        return Verdict(Remote.OFFLINE, (
            "Tailscale is not running on the box yet (it is downloaded from the internet "
            "first); the box connects on its own once it is there"))
    backend = str(status.get("BackendState", ""))
    if backend == "Running":
        where = address(status)
        if where is None:
            me = status.get("Self") or {}
            name = str(me.get("DNSName", "")).rstrip(".") or str(me.get("HostName", "the box"))
            return Verdict(Remote.CONNECTED, (
                f"connected to your tailnet as {name}; for phone apps (they need HTTPS) turn "
                "on MagicDNS and HTTPS certificates in Tailscale's admin console (DNS page)"))
        return Verdict(Remote.CONNECTED, f"connected to your tailnet: {where.url}")
    if backend == "NeedsMachineAuth":
        return Verdict(Remote.NEEDS_APPROVAL, (
            "your tailnet asks an administrator to approve this box: approve it in "
            "Tailscale's admin console, and it connects on its own"))
    if backend == "NeedsLogin":
        return Verdict(Remote.NOT_LOGGED_IN, (
            "Tailscale has not logged in with the auth key: if the box is online, the key "
            "was refused (mistyped, already used or expired: make a new one in Tailscale's "
            "admin console); otherwise it keeps trying on its own"))
    problems = [str(h) for h in status.get("Health") or []]
    why = f" ({problems[0]})" if problems else ""
    return Verdict(Remote.OFFLINE, (
        f"the box cannot reach Tailscale yet{why}; it keeps trying on its own: check that "
        "the box is connected to the internet"))


async def status(socket: Path = SOCKET, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """``GET /localapi/v0/status`` over ``socket``; None when nothing answers there."""
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket)),
                                  timeout=aiohttp.ClientTimeout(total=timeout_s)) as s,
            s.get(f"http://{LOCALAPI_HOST}/localapi/v0/status") as resp,
        ):
            if resp.status != 200:
                return None
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None
    return body if isinstance(body, dict) else None


async def wait(socket: Path = SOCKET, wait_s: float = 90.0, poll_s: float = 2.0) -> Verdict:
    """Ask until the box is connected, needs approval, or ``wait_s`` seconds have passed;
    the last verdict (tailscaled says NeedsLogin while its login is still under way, so
    only the answer at the deadline counts for that)."""
    deadline = time.monotonic() + wait_s
    while True:
        verdict = judge(await status(socket))
        if verdict.state in (Remote.CONNECTED, Remote.NEEDS_APPROVAL):
            return verdict
        if time.monotonic() >= deadline:
            return verdict
        await asyncio.sleep(poll_s)
