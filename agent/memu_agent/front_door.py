"""The box's front door: the agent owns port 80 and passes the stack's routes to its nginx.

Why the agent and not nginx on port 80: the agent's pages and API (status, updates, factory
reset, first boot) must answer when the stack is broken or not set up yet; a container that
does not start must never lock a family out of their box. So the agent listens on port 80
and forwards only the stack's routes to nginx on loopback (``compose.yaml`` publishes it on
``127.0.0.1:8080``), which routes them on to the services:

    /_matrix/…, /_synapse/client/…     Synapse (client and federation APIs)
    /.well-known/matrix/…              Matrix server discovery

``/_synapse/admin`` is not forwarded (nor routed by nginx): nobody on the LAN reaches
Synapse's admin API. Photos (Immich) get their own port, as they cannot live under a path.

``/`` is the first-boot page until the box is set up, and the chat web client (Element,
behind nginx) after: :func:`add_web_client` forwards ``GET /`` and every ``GET`` path no
other route claims (the client's files) once ``set_up()`` says so. When the client does not
answer (not downloaded yet, or down), ``/`` shows the agent's own page instead (the
``fallback`` handler: the first-boot "set up" page with the box's state), so the family is
never locked out of their box by a broken container.

These routes declare :attr:`Access.PROXIED`: the services authenticate their own users (Matrix
access tokens in a header, no cookies), so the agent adds no checks; when nginx does not
answer, the client gets 502 with a JSON error in the Matrix error format
(``{"errcode": "M_UNKNOWN", "error": …}``, Matrix client-server spec, "Standard error
response") and a hint.

The two answers that announce the homeserver's address (the chat discovery and Element's
``config.json``: :data:`ANNOUNCES`) say the stack's own address (``http://memu.local``),
except when the box was asked for by its tailnet name: then they announce its HTTPS
address there (:data:`BASE_URL`, :mod:`memu_agent.tailnet`).

Forwarding follows RFC 9110 §7.6.1: hop-by-hop headers are dropped both ways; the request
body and the response body are streamed, so a 100 MB upload is never held in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from yarl import URL

from memu_common.access import Access, add_route

log = logging.getLogger(__name__)

STACK_URL = "http://127.0.0.1:8080"
#: Path prefixes forwarded to the stack (each as ``<prefix>/{tail:.*}``).
PREFIXES = ("/_matrix", "/_synapse/client", "/.well-known/matrix")
#: RFC 9110 §7.6.1 hop-by-hop fields, plus what aiohttp sets itself.
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                  "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization",
                  "host", "content-length"})
UPSTREAM: web.AppKey[str] = web.AppKey("memu_agent.front_door.upstream")
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("memu_agent.front_door.session")


def _upstream(request: web.Request) -> tuple[URL, dict[str, str]]:
    """nginx's URL for ``request`` and the headers to send it (hop-by-hop ones dropped)."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    headers["Host"] = request.host
    headers["X-Forwarded-For"] = request.remote or ""
    headers["X-Forwarded-Proto"] = request.scheme
    # As received, never re-quoted: Matrix IDs in paths carry %-escapes (%21, %3A, %2F).
    return URL(request.app[UPSTREAM] + request.raw_path, encoded=True), headers


#: Given a request, the homeserver address to announce when it is not the stack's own (the
#: box asked for by its tailnet name: :func:`memu_agent.tailnet.base_url_for`), else None.
BASE_URL: web.AppKey[Callable[[web.Request], str | None]] = web.AppKey(
    "memu_agent.front_door.base_url")
#: The answers that announce the homeserver's address, and where in their JSON: Matrix
#: client discovery (client-server spec, "Server Discovery": ``m.homeserver.base_url``) and
#: Element web's ``config.json`` (``default_server_config``, element-web docs/config.md).
ANNOUNCES: dict[str, tuple[str, ...]] = {
    "/.well-known/matrix/client": ("m.homeserver",),
    "/config.json": ("default_server_config", "m.homeserver"),
}


def _pass_headers(upstream: aiohttp.ClientResponse, resp: web.StreamResponse,
                  also: frozenset[str] = frozenset()) -> None:
    """Give ``resp`` nginx's response headers but the hop-by-hop ones and ``also``
    (lower-case names)."""
    for k, v in upstream.headers.items():
        if k.lower() not in _HOP and k.lower() not in also:
            resp.headers.add(k, v)


def _stack_down(request: web.Request, e: Exception) -> web.Response:
    log.warning("%s %s: the stack does not answer: %s", request.method, request.path, e)
    return web.json_response(
        {"errcode": "M_UNKNOWN", "error": "the chat server is not running",
         "hint": "if the box was just set up or updated, wait a minute; the box's page "
                 "shows which service is down"},
        status=502, headers={"Retry-After": "30", "Cache-Control": "no-store"})


def announced(body: bytes, keys: tuple[str, ...], base_url: str) -> bytes:
    """``body`` (a JSON object) with its object at ``keys`` given ``base_url`` as its
    ``base_url``; unchanged when there is no such object. Pure."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    place = doc
    for key in keys:
        place = place.get(key) if isinstance(place, dict) else None
    if not isinstance(place, dict):
        return body
    place["base_url"] = base_url
    return json.dumps(doc, indent=1).encode()


async def _announce(request: web.Request, keys: tuple[str, ...], base_url: str
                    ) -> web.StreamResponse:
    """nginx's answer to a discovery ``GET``, announcing ``base_url`` as the homeserver."""
    url, headers = _upstream(request)
    headers = {k: v for k, v in headers.items() if k.lower() != "accept-encoding"}
    try:
        async with request.app[SESSION].get(url, headers=headers,
                                            allow_redirects=False) as upstream:
            body = await upstream.read()
            resp = web.Response(status=upstream.status, body=announced(body, keys, base_url)
                                if upstream.status == 200 else body)
            _pass_headers(upstream, resp, also=frozenset({"content-encoding"}))
            return resp
    except (aiohttp.ClientConnectionError, TimeoutError) as e:
        return _stack_down(request, e)


async def forward(request: web.Request) -> web.StreamResponse:
    """Pass ``request`` to the stack's nginx and stream its answer back (any method); a
    discovery answer (:data:`ANNOUNCES`) asked for by another of the box's names announces
    that name's address (:data:`BASE_URL`)."""
    keys = ANNOUNCES.get(request.path) if request.method == "GET" else None
    base_url = request.app[BASE_URL](request) if keys and BASE_URL in request.app else None
    if keys and base_url:
        return await _announce(request, keys, base_url)
    url, headers = _upstream(request)
    body = request.content if request.body_exists else None
    try:
        async with request.app[SESSION].request(
                request.method, url, headers=headers, data=body, allow_redirects=False,
                auto_decompress=False) as upstream:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            _pass_headers(upstream, resp)
            if upstream.headers.get("Content-Length") is not None:
                resp.content_length = int(upstream.headers["Content-Length"])
            await resp.prepare(request)
            async for chunk in upstream.content.iter_chunked(1 << 16):
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    except (aiohttp.ClientConnectionError, TimeoutError) as e:
        return _stack_down(request, e)


async def _session(app: web.Application) -> AsyncIterator[None]:
    # One pool of connections to nginx for the app's life; no total timeout (long polls and
    # large uploads), but a connect timeout so a dead stack answers 502 quickly.
    async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False) as session:
        app[SESSION] = session
        yield


def add_routes(app: web.Application, upstream: str = STACK_URL) -> None:
    """Forward the stack's routes (``PREFIXES``) of ``app`` to ``upstream`` (nginx's URL,
    scheme and authority only)."""
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    for prefix in PREFIXES:
        add_route(app, "*", prefix + "/{tail:.*}", forward, Access.PROXIED)


#: The upstream answers that mean "the chat web client is not there": the page falls back.
_NOT_THERE = frozenset({502, 503, 504})


def add_web_client(app: web.Application, set_up: Callable[[], bool],
                   fallback: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
    """Serve ``/`` and, once ``set_up()``, the chat web client's files through nginx.

    Register it after every other route: its ``GET /{tail}`` catch-all answers only paths no
    earlier route claims (404 before setup).

    Args:
        set_up: whether the box is set up (called per request).
        fallback: ``GET /`` before setup, and when the client does not answer after it.
    """
    async def root(request: web.Request) -> web.StreamResponse:
        if set_up():
            resp = await _try_forward(request)
            if resp is not None:
                return resp
        return await fallback(request)

    async def client_file(request: web.Request) -> web.StreamResponse:
        # /api/ is the agent's own: an unknown API path is a 404, never the client's page.
        if not set_up() or request.path.startswith("/api/"):
            raise web.HTTPNotFound()
        return await forward(request)

    add_route(app, "GET", "/", root, Access.OPEN, name="front-door-root")
    # PROXIED like the Matrix routes: the client's own files, reached by any host name
    # (Tailscale's too); nothing here changes the box.
    add_route(app, "GET", "/{tail:.*}", client_file, Access.PROXIED, name="front-door-client")


async def _try_forward(request: web.Request) -> web.StreamResponse | None:
    """Forward a GET whose answer is small (a page): None, sending nothing, when nginx does
    not answer or says the client is not there."""
    url, headers = _upstream(request)
    try:
        async with request.app[SESSION].get(url, headers=headers, allow_redirects=False,
                                            auto_decompress=False) as upstream:
            if upstream.status in _NOT_THERE:
                return None
            resp = web.Response(status=upstream.status, body=await upstream.read())
            _pass_headers(upstream, resp)
            return resp
    except (aiohttp.ClientConnectionError, TimeoutError) as e:
        log.info("GET %s: the chat web client does not answer (%s): the box's page instead",
                 request.path, e)
        return None
