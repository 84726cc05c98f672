"""The admin's pages after setup: signing in with the family admin's chat account, and the
box's status.

Routes (access as enforced by :mod:`memu_agent.auth`):
    ``GET /admin`` (admin): the box's status (version, updates, the stack's services) and a
        sign-out button. Without an admin session: the sign-in form (401); before setup, a
        setup code or claim session gets a 303 to ``/`` (setup first).
    ``GET /admin/sign-in`` (open): the form (user name, password).
    ``POST /admin/sign-in`` (open, CSRF-checked form): the name and password are checked by
        the chat server, the one place the admin's password lives (Matrix client-server API
        ``POST /_matrix/client/v3/login``), and the account must be a server admin
        (Synapse's ``GET /_synapse/admin/v1/users/<user_id>/admin``); the chat session made
        for the check is ended again (``/logout``), and the browser gets an admin session
        (HttpOnly, SameSite=Strict cookie; :mod:`memu_agent.sessions`). A wrong name or
        password, or an account that is not the admin: 403 with the form again, counted as a
        wrong try (429 back-off, as for the setup code); the chat server not answering: 503.
    ``POST /admin/sign-out`` (admin): ends the session; 303 to ``/admin/sign-in``.

The setup's first account is the server admin (``memu_firstboot.apply``); scripts keep using
the API token (``Authorization: Bearer``) on the JSON API.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from memu_agent import claim_api, csrf, stack
from memu_agent.appkeys import PATHS
from memu_agent.auth import AUTH, on_refusal
from memu_agent.ratelimit import client_key
from memu_agent.sessions import COOKIE
from memu_agent.update_api import UPDATER
from memu_common.access import Access, add_route
from memu_firstboot.provision import Homeserver, MatrixError
from memu_firstboot.web import is_set_up, respond

log = logging.getLogger(__name__)


class SignIn(enum.StrEnum):
    """What the chat server said about a name and password."""

    ADMIN = "admin"
    NOT_ADMIN = "not admin"
    WRONG = "wrong"
    UNREACHABLE = "unreachable"


#: Checks a user name and password: (name, password) -> what the chat server said.
Checker = Callable[[str, str], Awaitable[SignIn]]
CHECKER: web.AppKey[Checker] = web.AppKey("memu_agent.admin_pages.checker")


def synapse_checker(base_url: str) -> Checker:
    """The real check against Synapse at ``base_url`` (the box's inside: its admin API is
    not behind nginx); see the module docstring."""
    async def check(username: str, password: str) -> SignIn:
        async with aiohttp.ClientSession() as session:
            hs = Homeserver(session, base_url)
            try:
                account = await hs.login(username, password, device_name="Memu admin page")
            except MatrixError as e:
                if e.status in (400, 401, 403):
                    return SignIn.WRONG
                log.warning("admin sign-in: %s", e)
                return SignIn.UNREACHABLE
            try:
                admin = await hs.is_admin(account)
            except MatrixError as e:
                log.warning("admin sign-in: %s", e)
                return SignIn.UNREACHABLE
            finally:
                try:
                    await hs.logout(account)
                except MatrixError as e:  # the session expires by itself; say so
                    log.warning("admin sign-in: could not end the check's session: %s", e)
        return SignIn.ADMIN if admin else SignIn.NOT_ADMIN
    return check


_MESSAGES = {
    SignIn.WRONG: (403, "That user name and password do not match."),
    SignIn.NOT_ADMIN: (403, "This account is not the box's admin: sign in as the admin made "
                            "at setup."),
    SignIn.UNREACHABLE: (503, "The chat server, which checks the password, is not answering: "
                              "try again in a minute."),
}


def _see(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _sign_in_page(request: web.Request, *, status: int = 200, username: str = "",
                  error: str = "") -> web.Response:
    token = csrf.token(request)
    resp = respond(request, "sign_in.html", status=status, username=username, error=error,
                   csrf=token)
    csrf.set_cookie(request, resp, token)
    return resp


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    """``GET /admin/sign-in``: see the module docstring."""
    if not is_set_up(request):
        return _see("/")
    return _sign_in_page(request)


async def sign_in(request: web.Request) -> web.StreamResponse:
    """``POST /admin/sign-in``: see the module docstring."""
    if not is_set_up(request):
        return _see("/")
    data = await request.post()
    username = str(data.get("username", "")).strip()
    password = str(data.get("password", ""))
    auth = request.app[AUTH]
    key = client_key(request.remote)
    if (wait := auth.limiter.retry_after(key)) > 0:
        resp = _sign_in_page(request, status=429, username=username, error=(
            f"Too many wrong tries from this device: wait {math.ceil(wait)} seconds."))
        resp.headers["Retry-After"] = str(math.ceil(wait))
        return resp
    if not username or not password:
        return _sign_in_page(request, status=400, username=username,
                             error="Type the admin's user name and password.")
    said = await request.app[CHECKER](username, password)
    if said is not SignIn.ADMIN:
        if said is not SignIn.UNREACHABLE:
            auth.limiter.failed(key)
            log.warning("admin sign-in refused from %s: %s", key, said)
        status, message = _MESSAGES[said]
        return _sign_in_page(request, status=status, username=username, error=message)
    auth.limiter.succeeded(key)
    resp = _see("/admin")
    claim_api.set_session_cookie(request, resp, auth.sessions.new_admin())
    log.info("admin signed in from %s", key)
    return resp


async def sign_out(request: web.Request) -> web.StreamResponse:
    """``POST /admin/sign-out``: see the module docstring."""
    token = request.cookies.get(COOKIE)
    if token:
        request.app[AUTH].sessions.end(token)
    resp = _see("/admin/sign-in")
    resp.del_cookie(COOKIE, path="/")
    return resp


async def admin_page(request: web.Request) -> web.StreamResponse:
    """``GET /admin``: see the module docstring."""
    if not is_set_up(request):
        return _see("/")
    try:
        services = await stack.services(request.app[PATHS].docker_socket)
        stack_error = ""
    except OSError as e:
        services, stack_error = {}, f"Docker does not answer: {e}"
    token = csrf.token(request)
    resp = respond(request, "admin.html", update=request.app[UPDATER].snapshot(),
                   services=dict(sorted(services.items())), stack_error=stack_error,
                   csrf=token)
    csrf.set_cookie(request, resp, token)
    return resp


async def _refused(request: web.Request, status: int, error: str, hint: str
                   ) -> web.StreamResponse:
    """``/admin`` without the admin's session: the sign-in form, with the refusal's status
    (the address stays ``/admin``; signing in comes back to it)."""
    if status == 429:
        return _sign_in_page(request, status=429, error=f"Too many wrong tries: {hint}.")
    if not is_set_up(request):
        return _sign_in_page(request, status=status, error=(
            "This box is not set up yet: set it up on its first page, /, first."))
    return _sign_in_page(request, status=status, error=(
        "" if status == 401 else f"{error[:1].upper()}{error[1:]}: {hint}."))


def add_routes(app: web.Application, checker: Checker) -> None:
    """Register the admin pages; ``checker`` checks names and passwords
    (:func:`synapse_checker` on the box)."""
    app[CHECKER] = checker
    add_route(app, "GET", "/admin", admin_page, Access.ADMIN, name="admin")
    add_route(app, "GET", "/admin/sign-in", sign_in_form, Access.OPEN, name="admin-signin")
    add_route(app, "POST", "/admin/sign-in", sign_in, Access.OPEN, name="admin-signin-post")
    add_route(app, "POST", "/admin/sign-out", sign_out, Access.ADMIN, name="admin-signout")
    for handler in (admin_page, sign_in, sign_out):
        on_refusal(app, handler, _refused)
