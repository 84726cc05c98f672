"""Claiming the box: ``POST /api/claim`` (access: claim).

The person at the box proves it with the setup code shown on its screen
(``X-Memu-Setup-Code`` or a ``setup_code`` body field, see :mod:`memu_agent.auth`) and gets
the claim session in an HttpOnly, SameSite=Strict cookie, which the setup steps (the
first-boot flow) then use instead of the code. A later claim with the code replaces the
session (a dead phone cannot lock the family out); the claim session alone cannot claim.

The first claim also puts the update source back to the image's defaults: a channel or
server that someone changed before the family claimed the box must not outlive the claim.

Answers 200 ``{"state": "claimed", "first": true|false}``; 403 without the code itself; 410
once the box is set up; 500 when the claim cannot be stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from memu_agent.auth import AUTH, error, presented_code
from memu_agent.sessions import COOKIE
from memu_common.access import Access, add_route

log = logging.getLogger(__name__)

ON_FIRST_CLAIM: web.AppKey[Callable[[], None]] = web.AppKey("memu_agent.claim_api.on_first")


async def post_claim(request: web.Request) -> web.Response:
    """``POST /api/claim``: see the module docstring."""
    auth = request.app[AUTH]
    code = await presented_code(request)
    if code is None or not auth.check_code(code):  # the claim session alone cannot claim
        return error(403, "claiming the box needs the setup code itself",
                     "type the setup code shown on the box's screen")
    first = not auth.sessions.claimed()
    try:
        token = claim(request.app)
    except OSError:
        return error(500, "the box could not store the claim", "try again in a minute")
    resp = web.json_response({"state": "claimed", "first": first},
                             headers={"Cache-Control": "no-store"})
    set_session_cookie(request, resp, token)
    return resp


def claim(app: web.Application) -> str:
    """Make the claim session (the caller has checked the setup code), replacing any
    earlier one; at the first claim, run the app's first-claim hook. Returns the session's
    token, for :func:`set_session_cookie`.

    Raises:
        OSError: the claim cannot be stored (logged here).
    """
    sessions = app[AUTH].sessions
    first = not sessions.claimed()
    try:
        token = sessions.new_claim()
    except OSError as e:
        log.error("cannot store the claim: %s", e)
        raise
    if first:
        app[ON_FIRST_CLAIM]()
    log.info("box claimed%s", " (first claim)" if first else " again (earlier session ended)")
    return token


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    """Send the session ``token`` as the HttpOnly, SameSite=Strict session cookie (Secure
    when ``request`` came over HTTPS)."""
    response.set_cookie(COOKIE, token, path="/", httponly=True, samesite="Strict",
                        secure=request.secure)


def add_routes(app: web.Application, on_first_claim: Callable[[], None]) -> None:
    """Register ``POST /api/claim``; ``on_first_claim`` runs once, at the first claim."""
    app[ON_FIRST_CLAIM] = on_first_claim
    add_route(app, "POST", "/api/claim", post_claim, Access.CLAIM, name="api-claim")
