"""The front door: the agent passes the stack's routes to nginx (here a small aiohttp server
on a real socket standing for it, echoing what it received) and nothing else; a dead stack
gives a clear 502 while the agent's own pages stay up."""

from __future__ import annotations

import json
import socket

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer
from yarl import URL

from memu_agent.app import make_app
from memu_agent.config import AgentConfig
from memu_agent.facts import HostPaths


def raw(client: TestClient[web.Request, web.Application], path_qs: str) -> URL:
    """The agent's URL for ``path_qs`` exactly as written (yarl would re-quote it)."""
    return URL(f"http://127.0.0.1:{client.port}{path_qs}", encoded=True)


async def echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if request.path == "/_matrix/media/v3/download/big":
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"x" * 65536)
        await resp.write_eof()
        return resp
    return web.json_response(
        {"method": request.method, "path_qs": request.raw_path, "body_len": len(body),
         "host": request.headers.get("Host"), "xff": request.headers.get("X-Forwarded-For"),
         "auth": request.headers.get("Authorization")},
        status=201 if request.method == "PUT" else 200, headers={"X-Upstream": "nginx"})


async def test_stack_routes_are_forwarded_with_method_query_body_and_headers(
        aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, config: AgentConfig,
        host: HostPaths) -> None:
    upstream_app = web.Application(client_max_size=200 << 20)
    upstream_app.router.add_route("*", "/{tail:.*}", echo)
    upstream: TestServer = await aiohttp_server(upstream_app)
    app = make_app(config, paths=host, stack_url=str(upstream.make_url("/")))
    client = await aiohttp_client(app)

    resp = await client.session.get(raw(client, "/_matrix/client/versions?x=1&y=%2F"))
    assert resp.status == 200 and resp.headers["X-Upstream"] == "nginx"
    seen = await resp.json()
    assert seen["method"] == "GET" and seen["path_qs"] == "/_matrix/client/versions?x=1&y=%2F"
    assert seen["xff"] == "127.0.0.1" and seen["host"] == f"127.0.0.1:{client.port}"

    # A Matrix client's upload: any host name (Tailscale's too), a token, a 20 MB body.
    upload = b"\0" * (20 << 20)
    resp = await client.session.put(
        raw(client, "/_matrix/client/v3/rooms/%21r%3Afamily.test/send/m.room.message/1"),
        data=upload, headers={"Host": "memu.tail1234.ts.net",
                                                  "Authorization": "Bearer syt_token"})
    seen = await resp.json()
    assert resp.status == 201, seen
    assert seen["body_len"] == len(upload) and seen["auth"] == "Bearer syt_token"
    assert seen["host"] == "memu.tail1234.ts.net"
    assert seen["path_qs"] == "/_matrix/client/v3/rooms/%21r%3Afamily.test/send/m.room.message/1"

    resp = await client.get("/_matrix/media/v3/download/big")
    assert len(await resp.read()) == 64 * 65536

    for path in ("/_synapse/client/oidc/callback", "/.well-known/matrix/client"):
        assert (await (await client.get(path)).json())["path_qs"] == path
    # Synapse's admin API and other paths are not the stack's: not forwarded.
    for path in ("/_synapse/admin/v1/register", "/_synapsex/y", "/matrix"):
        resp = await client.post(path, json={})
        assert resp.status in (403, 404, 405), path
        assert resp.headers.get("X-Upstream") is None


async def test_a_dead_stack_gives_502_in_matrix_format_and_the_page_stays_up(
        aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths) -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = await aiohttp_client(make_app(config, paths=host,
                                           stack_url=f"http://127.0.0.1:{port}"))
    resp = await client.post("/_matrix/client/v3/login", data=json.dumps({"type": "x"}))
    assert resp.status == 502 and resp.headers["Retry-After"] == "30"
    body = await resp.json()
    assert body["errcode"] == "M_UNKNOWN" and "not running" in body["error"] and body["hint"]
    assert (await client.get("/api/status")).status == 200
    assert (await client.get("/")).status == 200


async def test_slash_is_the_setup_page_then_the_chat_client_with_the_box_page_as_fallback(
        aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, config: AgentConfig,
        host: HostPaths) -> None:
    state = {"client": 200}

    async def element(request: web.Request) -> web.Response:
        if state["client"] != 200:  # nginx's answer while Element is not running
            return web.Response(status=state["client"], text="<h1>502 Bad Gateway</h1>")
        return web.Response(text=f"<title>Element</title>{request.path}",
                            content_type="text/html", headers={"X-Upstream": "nginx"})

    upstream_app = web.Application()
    upstream_app.router.add_get("/{tail:.*}", element)
    upstream: TestServer = await aiohttp_server(upstream_app)
    client = await aiohttp_client(make_app(config, paths=host,
                                           stack_url=str(upstream.make_url("/"))))

    # Before setup: / is the first-boot page, other paths are not forwarded.
    page = await (await client.get("/")).text()
    assert "admin_password" in page and "Element" not in page
    assert (await client.get("/bundles/abc/init.js")).status == 404

    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / "setup-done").touch()
    resp = await client.get("/")
    assert resp.status == 200 and resp.headers["X-Upstream"] == "nginx"
    assert await resp.text() == "<title>Element</title>/"
    resp = await client.get("/config.json")
    assert await resp.text() == "<title>Element</title>/config.json"
    # The agent's own pages and API win over the client; an unknown API path is a 404.
    assert (await client.get("/api/status")).status == 200
    assert (await client.get("/api/nope")).status == 404
    assert (await client.get("/static/firstboot.css")).content_type == "text/css"
    assert (await client.post("/config.json")).status == 405

    # Element not running (nginx says 502): / is the box's own page, never an error.
    state["client"] = 502
    resp = await client.get("/")
    assert resp.status == 200 and "is set up" in await resp.text()
    assert (await client.get("/config.json")).status == 502
    await upstream.close()  # nginx down too
    resp = await client.get("/")
    assert resp.status == 200 and "is set up" in await resp.text()
