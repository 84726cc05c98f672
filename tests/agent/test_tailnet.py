"""The box on the family's tailnet (memu_agent.tailnet): the agent learns its HTTPS address
from tailscaled's LocalAPI (a stand-in on a Unix socket, memu_dev.tailscale_api: the
Tailscale image cannot be fetched here), then answers to that name, marks requests that
came through Tailscale's HTTPS as secure, and announces that address in the chat discovery
and the chat client's configuration; nginx is a small aiohttp server standing for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from pytest_aiohttp import AiohttpClient, AiohttpServer

from memu_agent.app import make_app
from memu_agent.config import AgentConfig
from memu_agent.facts import HostPaths
from memu_agent.front_door import announced
from memu_agent.tailnet import Tailnet, https_middleware
from memu_dev.tailscale_api import NO_CERTIFICATES, RUNNING, LocalApi
from memu_firstboot.setup_token import ensure_token

NAME = "memu.tail1234.ts.net"
#: What Tailscale's serve proxy adds (tailscale.com/ipn/ipnlocal/serve.go).
THROUGH_TAILSCALE = {"Host": NAME, "X-Forwarded-Proto": "https"}
#: Synapse's discovery and Element's configuration as the stack writes them.
WELL_KNOWN = {"m.homeserver": {"base_url": "http://memu.local/"},
              "io.element.e2ee": {"default": False}}
ELEMENT = {"default_server_config": {"m.homeserver": {"base_url": "http://memu.local",
                                                      "server_name": "memu.local"}},
           "brand": "Memu"}


async def nginx(request: web.Request) -> web.Response:
    body = WELL_KNOWN if request.path == "/.well-known/matrix/client" else ELEMENT
    return web.json_response(body, headers={"Access-Control-Allow-Origin": "*",
                                            "X-Upstream": "nginx"})


@pytest.fixture
async def localapi(tmp_path: Path) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(states: list[dict[str, Any]]) -> Path:
        socket = tmp_path / f"tailscaled-{len(runners)}.sock"
        runners.append(await LocalApi(states).serve(socket))
        return socket

    yield start
    for runner in runners:
        await runner.cleanup()


async def agent(aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer,
                config: AgentConfig, host: HostPaths, tailnet: Tailnet
                ) -> TestClient[web.Request, web.Application]:
    upstream = web.Application()
    upstream.router.add_get("/{tail:.*}", nginx)
    server = await aiohttp_server(upstream)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / "setup-done").touch()
    return await aiohttp_client(make_app(config, paths=host, tailnet=tailnet,
                                         stack_url=str(server.make_url("/"))))


async def test_learns_the_address_and_keeps_it_through_a_restart_of_tailscaled(
        localapi: Any, tmp_path: Path) -> None:
    tailnet = Tailnet(socket=await localapi([{"BackendState": "Starting"}, RUNNING,
                                             {"BackendState": "NoState"}]))
    assert await tailnet.refresh() is None and tailnet.names() == ()
    assert (await tailnet.refresh()).url == f"https://{NAME}"  # type: ignore[union-attr]
    assert (await tailnet.refresh()).name == NAME  # type: ignore[union-attr]
    # no certificates in the tailnet: no HTTPS address (the setup says how to turn them on)
    plain = Tailnet(socket=await localapi([NO_CERTIFICATES]))
    assert await plain.refresh() is None
    assert await Tailnet(socket=tmp_path / "missing.sock").refresh() is None


async def test_through_tailscale_the_box_answers_to_its_tailnet_name(
        aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, config: AgentConfig,
        host: HostPaths, localapi: Any) -> None:
    tailnet = Tailnet(socket=await localapi([RUNNING]), poll_s=0.05)
    client = await agent(aiohttp_client, aiohttp_server, config, host, tailnet)
    for _ in range(100):  # the agent's poll, started with the app
        if tailnet.names():
            break
        await asyncio.sleep(0.05)
    assert tailnet.names() == (NAME,)
    # Chat discovery and the chat client's configuration announce the HTTPS address when
    # asked by that name (phone apps away from home cannot reach memu.local) ...
    resp = await client.get("/.well-known/matrix/client", headers=THROUGH_TAILSCALE)
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
    assert await resp.json() == WELL_KNOWN | {"m.homeserver": {"base_url": f"https://{NAME}"}}
    resp = await client.get("/config.json", headers=THROUGH_TAILSCALE)
    assert (await resp.json())["default_server_config"]["m.homeserver"] == {
        "base_url": f"https://{NAME}", "server_name": "memu.local"}
    # ... and what the stack says when asked by the box's own name.
    resp = await client.get("/.well-known/matrix/client", headers={"Host": "memu.local"})
    assert await resp.json() == WELL_KNOWN
    # The ready page gives phone apps that address, and links the way it was opened.
    ready = await (await client.get("/setup/ready", headers=THROUGH_TAILSCALE)).text()
    assert f"ask for a server: <b>https://{NAME}</b>" in ready
    assert f'<a href="https://{NAME}/">' in ready
    ready = await (await client.get("/setup/ready", headers={"Host": "192.168.1.2"})).text()
    assert f"https://{NAME}" in ready and '<a href="http://192.168.1.2/">' in ready
    # The box's own routes take the name as a Host; through Tailscale's HTTPS (from
    # loopback, as tailscaled connects) the session cookie is Secure.
    code = ensure_token(config.state_dir)
    (config.state_dir / "setup-done").unlink()
    resp = await client.post("/api/claim", json={"setup_code": code},
                             headers=THROUGH_TAILSCALE | {"Origin": f"https://{NAME}"})
    assert resp.status == 200, await resp.text()
    assert "Secure" in resp.headers["Set-Cookie"]
    resp = await client.post("/api/claim", json={"setup_code": code},
                             headers={"Host": "192.168.1.2"})  # the box on the LAN
    assert resp.status == 200 and "Secure" not in resp.headers["Set-Cookie"]
    # A name that is not the box's is still refused.
    resp = await client.post("/api/claim", json={"setup_code": code},
                             headers={"Host": "other.tail1234.ts.net"})
    assert resp.status == 403 and "host name" in (await resp.json())["error"]


async def test_forwarded_https_is_believed_from_loopback_only() -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.scheme)
        return web.Response()

    for peer, scheme in (("127.0.0.1", "https"), ("::1", "https"), ("192.168.1.20", "http")):
        transport = type("T", (), {"get_extra_info": lambda self, k, d=None, p=peer: (
            (p, 1234) if k == "peername" else d)})()
        request = make_mocked_request("GET", "/", headers={"X-Forwarded-Proto": "https"},
                                      transport=transport)
        await https_middleware(request, handler)
        assert seen[-1] == scheme, peer


def test_announced_rewrites_only_the_homeserver_address() -> None:
    keys = ("m.homeserver",)
    assert announced(b'{"m.homeserver": {"base_url": "http://memu.local/"}, "x": 1}', keys,
                     "https://b") == b'{\n "m.homeserver": {\n  "base_url": "https://b"\n },' \
                                     b'\n "x": 1\n}'
    for body in (b"not json", b"[]", b'{"m.homeserver": "x"}', b"{}"):
        assert announced(body, keys, "https://b") == body
