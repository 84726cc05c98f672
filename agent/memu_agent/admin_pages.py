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
        A right one also makes photos' administrator when Immich has arrived since setup
        (:mod:`memu_firstboot.photos`: the sign-in is one of the two moments the box holds
        the admin's password).
    ``POST /admin/sign-out`` (admin): ends the session (and its chat session); 303 to
        ``/admin/sign-in``.
    ``POST /admin/members`` (admin): adds a family member: a chat account with a generated
        password shown once, put in the family room.
    ``POST /admin/members/password`` (admin): a new generated password for a member (their
        sessions end), shown once.
    ``POST /admin/members/remove`` (admin): deactivates a member's account (its messages
        stay). Not the admin's own account, not the assistant's.

The setup's first account is the server admin (``memu_firstboot.apply``). The members'
pages act with the admin's own chat session from the sign-in, kept in the agent's memory
while the admin session lives (ended at sign-out, at the agent's stop, and, after a crash,
at the next sign-in: its device is named :data:`DEVICE_NAME`). Scripts keep using the API
token (``Authorization: Bearer``) on the JSON API; it does not manage members.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from memu_agent import assistant, claim_api, stack
from memu_agent.appkeys import CONFIG, PATHS
from memu_agent.auth import AUTH, WAIT_WORDS, on_refusal, told_to_wait, wait_s
from memu_agent.pages import form_page, photos_url, see_other, sentence
from memu_agent.ratelimit import client_key
from memu_agent.sessions import COOKIE
from memu_agent.setup_pages import RUNNER
from memu_agent.tailnet import remote_url
from memu_agent.update_api import UPDATER
from memu_common import MemuError
from memu_common.access import Access, add_route
from memu_firstboot import config_files, form, photos, reapply
from memu_firstboot.form import BOT_USERNAME
from memu_firstboot.provision import (
    FAMILY_ALIAS,
    Account,
    Homeserver,
    MatrixError,
    localpart,
    server_of,
)
from memu_firstboot.setup_token import generate_token
from memu_firstboot.web import is_set_up

log = logging.getLogger(__name__)


class SignIn(enum.StrEnum):
    """What the chat server said about a name and password."""

    ADMIN = "admin"
    NOT_ADMIN = "not admin"
    WRONG = "wrong"
    LIMITED = "limited"
    UNREACHABLE = "unreachable"


#: Chat sessions kept at most (as many as admin sessions, memu_agent.sessions' max_admin).
MAX_CHATS = 32
#: The chat device name of the admin page's sessions.
DEVICE_NAME = "Memu admin page"
#: Checks a user name and password: (name, password) -> what the chat server said, and the
#: admin's chat session when it is the admin.
Checker = Callable[[str, str], Awaitable[tuple[SignIn, Account | None]]]
CHECKER: web.AppKey[Checker] = web.AppKey("memu_agent.admin_pages.checker")
SYNAPSE: web.AppKey[str] = web.AppKey("memu_agent.admin_pages.synapse")
IMMICH: web.AppKey[str] = web.AppKey("memu_agent.admin_pages.immich")
#: The admin's chat session per admin session (by the session token's SHA-256).
CHATS: web.AppKey[dict[str, Account]] = web.AppKey("memu_agent.admin_pages.chats")


def synapse_checker(base_url: str) -> Checker:
    """The real check against Synapse at ``base_url`` (the box's inside: its admin API is
    not behind nginx); see the module docstring."""
    async def check(username: str, password: str) -> tuple[SignIn, Account | None]:
        async with aiohttp.ClientSession() as session:
            hs = Homeserver(session, base_url)
            try:
                account = await hs.login(username, password, device_name=DEVICE_NAME)
            except MatrixError as e:
                if e.status in (400, 401, 403):
                    return SignIn.WRONG, None
                if e.status == 429:  # Synapse's own login rate limit (rc_login)
                    return SignIn.LIMITED, None
                log.warning("admin sign-in: %s", e)
                return SignIn.UNREACHABLE, None
            try:
                admin = await hs.is_admin(account)
                if admin:
                    await hs.drop_devices(account, password, DEVICE_NAME)
                    return SignIn.ADMIN, account
            except MatrixError as e:
                log.warning("admin sign-in: %s", e)
                await _logout(hs, account)
                return SignIn.UNREACHABLE, None
            await _logout(hs, account)
        return SignIn.NOT_ADMIN, None
    return check


async def _logout(hs: Homeserver, account: Account) -> None:
    try:
        await hs.logout(account)
    except MatrixError as e:  # its device stays until the next sign-in drops it
        log.warning("could not end a chat session of the admin page: %s", e)


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _chat(request: web.Request) -> Account | None:
    token = request.cookies.get(COOKIE)
    return request.app[CHATS].get(_key(token)) if token else None


_MESSAGES = {
    SignIn.WRONG: (403, "That user name and password do not match."),
    SignIn.NOT_ADMIN: (403, "This account is not the box's admin: sign in as the admin made "
                            "at setup."),
    SignIn.LIMITED: (429, "The chat server has seen many sign-ins lately and asks to wait: "
                          "try again in a few minutes."),
    SignIn.UNREACHABLE: (503, "The chat server, which checks the password, is not answering: "
                              "try again in a minute."),
}


def _sign_in_page(request: web.Request, *, status: int = 200, username: str = "",
                  error: str = "") -> web.Response:
    return form_page(request, "sign_in.html", status=status, username=username, error=error,
                     notice="")


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    """``GET /admin/sign-in``: see the module docstring."""
    if not is_set_up(request):
        return see_other("/")
    return _sign_in_page(request)


async def sign_in(request: web.Request) -> web.StreamResponse:
    """``POST /admin/sign-in``: see the module docstring."""
    if not is_set_up(request):
        return see_other("/")
    data = await request.post()
    username = str(data.get("username", "")).strip()
    password = str(data.get("password", ""))
    auth = request.app[AUTH]
    key = client_key(request.remote)
    if wait := wait_s(request):
        return told_to_wait(_sign_in_page(request, status=429, username=username,
                                          error=WAIT_WORDS.format(wait)), wait)
    if not username or not password:
        return _sign_in_page(request, status=400, username=username,
                             error="Type the admin's user name and password.")
    said, account = await request.app[CHECKER](username, password)
    if said is not SignIn.ADMIN or account is None:
        if said in (SignIn.WRONG, SignIn.NOT_ADMIN):
            auth.limiter.failed(key)
            log.warning("admin sign-in refused from %s: %s", key, said)
        status, message = _MESSAGES[said]
        return _sign_in_page(request, status=status, username=username, error=message)
    auth.limiter.succeeded(key)
    await _photos_admin(request, account.user_id, password)
    resp = see_other("/admin")
    token = auth.sessions.new_admin()
    chats = request.app[CHATS]
    chats[_key(token)] = account
    while len(chats) > MAX_CHATS:  # the oldest sign-ins' sessions have expired by now
        old = chats.pop(next(iter(chats)))
        async with aiohttp.ClientSession() as session:
            await _logout(Homeserver(session, request.app[SYNAPSE]), old)
    claim_api.set_session_cookie(request, resp, token)
    log.info("admin signed in from %s", key)
    return resp


async def _photos_admin(request: web.Request, user_id: str, password: str) -> None:
    """Make photos' administrator as ``user_id`` with ``password`` unless the box has
    (one look; Immich not there or refusing is logged, never stops the sign-in)."""
    state_dir = request.app[CONFIG].state_dir
    if photos.recorded(state_dir):
        return
    async with aiohttp.ClientSession() as session:
        try:
            verdict = await photos.ensure_admin(session, request.app[IMMICH], state_dir,
                                                user_id, password)
        except (MemuError, OSError) as e:
            log.warning("photos' administrator: %s", e)
            return
    log.info("photos' administrator: %s", verdict.message)


async def sign_out(request: web.Request) -> web.StreamResponse:
    """``POST /admin/sign-out``: see the module docstring."""
    token = request.cookies.get(COOKIE)
    if token:
        request.app[AUTH].sessions.end(token)
        if account := request.app[CHATS].pop(_key(token), None):
            async with aiohttp.ClientSession() as session:
                await _logout(Homeserver(session, request.app[SYNAPSE]), account)
    resp = see_other("/admin/sign-in")
    resp.del_cookie(COOKIE, path="/")
    return resp


async def admin_page(request: web.Request) -> web.StreamResponse:
    """``GET /admin``: see the module docstring."""
    if not is_set_up(request):
        return see_other("/")
    return await _render(request)


async def _render(request: web.Request, *, status: int = 200, done: str = "",
                  error: str = "", secret: dict[str, str] | None = None) -> web.Response:
    """The admin page; ``done``/``error`` say how the last action went, ``secret`` is a
    new password to show once (``{"user_id": …, "password": …}``)."""
    try:
        services = await stack.services(request.app[PATHS].docker_socket)
        stack_error = ""
    except OSError as e:
        services, stack_error = {}, f"Docker does not answer: {e}"
    members: list[Any] = []
    members_error = ""
    admin = _chat(request)
    if admin is None:
        members_error = "Sign in on this page (not with the API token) to manage members."
    else:
        try:
            async with aiohttp.ClientSession() as session:
                members = await Homeserver(session, request.app[SYNAPSE]).members(admin)
        except MatrixError as e:
            members_error = e.message
    return form_page(request, "admin.html", status=status,
                     update=request.app[UPDATER].snapshot(),
                     services=dict(sorted(services.items())), stack_error=stack_error,
                     assistant=request.app[assistant.WATCH].snapshot(),
                     members=members, members_error=members_error,
                     me=admin.user_id if admin else "", bot=BOT_USERNAME, done=done,
                     photos_admin=photos.recorded(request.app[CONFIG].state_dir) or "",
                     photos_url=photos_url(request), remote_url=remote_url(request),
                     edited=config_files.edited(request.app[RUNNER].config_dir),
                     rendered=reapply.last_render(request.app[CONFIG].state_dir),
                     error=error, secret=secret)


async def _member_action(request: web.Request) -> tuple[Account, str, dict[str, str]] | str:
    """The admin's chat session, the member's user ID and the form; or why not (a plain
    sentence)."""
    admin = _chat(request)
    if admin is None:
        return "Sign in on this page (not with the API token) to manage members."
    data = {k: str(v) for k, v in (await request.post()).items()}
    try:
        name = form.admin_username(data.get("username", ""))
    except ValueError as e:
        return str(e)
    return admin, f"@{name}:{server_of(admin.user_id)}", data


async def add_member(request: web.Request) -> web.StreamResponse:
    """``POST /admin/members``: see the module docstring."""
    got = await _member_action(request)
    if isinstance(got, str):
        return await _render(request, status=400, error=got)
    admin, user_id, data = got
    try:
        display = form.family_name(data.get("display_name") or localpart(user_id))
    except ValueError as e:
        return await _render(request, status=400, error=str(e))
    password = generate_token()
    server = server_of(user_id)
    async with aiohttp.ClientSession() as session:
        hs = Homeserver(session, request.app[SYNAPSE])
        try:
            await hs.add_member(admin, user_id, display, password)
            await hs.put_in_room(admin, f"#{FAMILY_ALIAS}:{server}", user_id)
        except MatrixError as e:
            taken = e.errcode == "M_USER_IN_USE"
            return await _render(request, status=409 if taken else 502, error=(
                f"{user_id} is taken: choose another user name." if taken else e.message))
    log.info("admin added %s", user_id)
    return await _render(request, done=f"{display} can now sign in to chat, and is in the "
                         "family room.", secret={"user_id": user_id, "password": password})


async def _act(request: web.Request, do: Callable[[Homeserver], Awaitable[None]]
               ) -> str | None:
    """Run ``do`` on the box's Synapse; why it failed, or None."""
    async with aiohttp.ClientSession() as session:
        try:
            await do(Homeserver(session, request.app[SYNAPSE]))
        except MatrixError as e:
            return e.message
    return None


async def new_password(request: web.Request) -> web.StreamResponse:
    """``POST /admin/members/password``: see the module docstring."""
    got = await _member_action(request)
    if isinstance(got, str):
        return await _render(request, status=400, error=got)
    admin, user_id, _ = got
    password = generate_token()
    if error := await _act(request, lambda hs: hs.set_password(admin, user_id, password)):
        return await _render(request, status=502, error=error)
    log.info("admin reset the password of %s", user_id)
    return await _render(request, done=f"{user_id} has a new password; their open sessions "
                         "ended.", secret={"user_id": user_id, "password": password})


async def remove_member(request: web.Request) -> web.StreamResponse:
    """``POST /admin/members/remove``: see the module docstring."""
    got = await _member_action(request)
    if isinstance(got, str):
        return await _render(request, status=400, error=got)
    admin, user_id, _ = got
    if user_id == admin.user_id:
        return await _render(request, status=400, error="You cannot remove your own account.")
    if error := await _act(request, lambda hs: hs.remove_member(admin, user_id)):
        return await _render(request, status=502, error=error)
    log.info("admin removed %s", user_id)
    return await _render(request, done=f"{user_id} can no longer sign in; their messages "
                         "stay in the family's rooms.")


async def _end_chats(app: web.Application) -> None:
    chats = list(app[CHATS].values())
    app[CHATS].clear()
    if chats:
        async with aiohttp.ClientSession() as session:
            hs = Homeserver(session, app[SYNAPSE])
            for account in chats:
                await _logout(hs, account)


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
        "" if status == 401 else sentence(error, hint)))


def add_routes(app: web.Application, checker: Checker, synapse_url: str,
               immich_url: str = photos.IMMICH_URL) -> None:
    """Register the admin pages; ``checker`` checks names and passwords
    (:func:`synapse_checker` on the box), ``synapse_url`` is where the members are managed
    (Synapse's admin API, from the box's inside), ``immich_url`` where photos' administrator
    is made (Immich on loopback)."""
    app[CHECKER] = checker
    app[SYNAPSE] = synapse_url
    app[IMMICH] = immich_url
    app[CHATS] = {}
    app.on_shutdown.append(_end_chats)
    add_route(app, "GET", "/admin", admin_page, Access.ADMIN, name="admin")
    add_route(app, "GET", "/admin/sign-in", sign_in_form, Access.OPEN, name="admin-signin")
    add_route(app, "POST", "/admin/sign-in", sign_in, Access.OPEN, name="admin-signin-post")
    add_route(app, "POST", "/admin/sign-out", sign_out, Access.ADMIN, name="admin-signout")
    add_route(app, "POST", "/admin/members", add_member, Access.ADMIN, name="admin-members")
    add_route(app, "POST", "/admin/members/password", new_password, Access.ADMIN,
              name="admin-member-password")
    add_route(app, "POST", "/admin/members/remove", remove_member, Access.ADMIN,
              name="admin-member-remove")
    for handler in (admin_page, sign_in, sign_out, add_member, new_password, remove_member):
        on_refusal(app, handler, _refused)
