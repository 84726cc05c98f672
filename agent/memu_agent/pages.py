"""What the agent's page modules share: a page that carries a form (with a fresh CSRF token,
:mod:`memu_agent.csrf`) and the redirect after a form (303 See Other, RFC 9110 15.4.4)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from memu_agent import csrf
from memu_agent.auth import host_name
from memu_firstboot.web import respond


def form_page(request: web.Request, name: str, *, status: int = 200,
              **values: Any) -> web.Response:
    """The template ``name`` (:func:`memu_firstboot.web.respond`) with ``csrf`` set to a
    token for its forms, and the matching cookie."""
    token = csrf.token(request)
    resp = respond(request, name, status=status, csrf=token, **values)
    csrf.set_cookie(request, resp, token)
    return resp


def sentence(*parts: str) -> str:
    """``parts`` joined with ": " as one sentence for a page: first letter capital, a full
    stop at the end (``("wrong setup code", "check it")`` → ``Wrong setup code: check it.``;
    the auth layer's refusals and the errors of :mod:`memu_firstboot.provision` are written
    in lower case without one)."""
    text = ": ".join(parts)
    return f"{text[:1].upper()}{text[1:]}."


def photos_url(request: web.Request) -> str:
    """Photos' address on the box as this browser reaches it: the request's host name on
    port 2283, where the stack's nginx serves Immich (it cannot live under a path)."""
    return f"http://{host_name(request.host)}:2283/"


def see_other(location: str) -> web.Response:
    """303 to ``location``, not cached: where a browser goes after a form or a refusal."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
