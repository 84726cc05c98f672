"""CSRF tokens for the box's own pages (double-submit cookie, OWASP CSRF cheat sheet).

Every page with a form gets a random token in the ``memu_csrf`` cookie (HttpOnly,
SameSite=Strict) and the same token in a hidden ``csrf`` field; a state-changing request
that a browser could have been made to send (a form body, or one that carries the session
cookie) must bring the field, or the ``X-Memu-CSRF`` header, equal to the cookie. A site
elsewhere can neither read the cookie nor set it on the box's host name, so it cannot forge
the pair. This is on top of the ``Origin``/``Host`` checks and SameSite cookies
(:mod:`memu_agent.auth`); scripts that send the setup code or the API token in a header
are not affected (a browser cannot send those cross-site without the box agreeing to CORS).
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

from memu_agent.sessions import COOKIE as SESSION_COOKIE

COOKIE = "memu_csrf"
#: The setup code's header (:mod:`memu_agent.auth`).
CODE_HEADER = "X-Memu-Setup-Code"
FIELD = "csrf"
HEADER = "X-Memu-CSRF"
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def token(request: web.Request) -> str:
    """The CSRF token for the page answering ``request``: the browser's cookie when it has
    a well-formed one, else a new one (send it with :func:`set_cookie`)."""
    value = request.cookies.get(COOKIE, "")
    if 32 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum():
        return value
    return secrets.token_urlsafe(32)


def set_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    """Send the page's token ``value`` with ``response`` unless the browser has it."""
    if value != request.cookies.get(COOKIE):
        response.set_cookie(COOKIE, value, path="/", httponly=True, samesite="Strict",
                            secure=request.secure)


def needed(request: web.Request) -> bool:
    """Whether ``request`` (a state-changing one) must carry a CSRF token: a form body, or
    the session cookie, unless it proves itself in a header (the setup code, a bearer
    token), which a page elsewhere cannot make a browser send."""
    if CODE_HEADER in request.headers or "Authorization" in request.headers:
        return False
    return request.content_type in _FORMS or SESSION_COOKIE in request.cookies


async def valid(request: web.Request) -> bool:
    """Whether ``request`` carries a token (header, or the form field) equal to its
    ``memu_csrf`` cookie; compared in constant time."""
    cookie = request.cookies.get(COOKIE, "")
    given = request.headers.get(HEADER)
    if given is None and request.content_type in _FORMS:
        value = (await request.post()).get(FIELD)
        given = value if isinstance(value, str) else None
    if not cookie or not given:
        return False
    return hmac.compare_digest(cookie.encode(), given.encode())
