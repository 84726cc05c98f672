"""A forgotten admin password, reset by someone at the box: the proof is a recovery code shown
on the box's own screen, never on the network (as the setup code is before setup).

Routes (access: open; the code is checked here, wrong codes back off like the setup code's):
    ``GET /admin/recover``: makes a recovery code unless one is pending, shows it on the
        console (``/run/issue.d``, :func:`memu_agent.console.issue_text`), valid for
        :data:`VALID_S` seconds, and answers the form (code, new password twice). Before
        setup: 303 to ``/``.
    ``POST /admin/recover`` (CSRF-checked form): the right code and an acceptable password
        (:func:`memu_firstboot.form.password_problem`) reset the password of the admin made
        at setup (:func:`memu_firstboot.state.setup_admin`) through Synapse
        (:meth:`memu_firstboot.provision.Homeserver.recover_password`, with the
        registration shared secret from the stack's configuration); their sessions end, the
        code is used up, the console no longer shows it, and the answer is the sign-in page.
        A wrong or expired code: 403; a password that will not do: 400, both with the form.

The pending code lives in ``<state_dir>/admin-recovery.json`` (0600, ``{"code": …,
"expires_at": <seconds since the epoch>}``), so the console can show it again after the
agent restarts.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from memu_agent import console
from memu_agent.appkeys import CONFIG
from memu_agent.auth import AUTH, WAIT_WORDS, normalize_code, on_refusal, told_to_wait, wait_s
from memu_agent.facts import local_name
from memu_agent.pages import form_page, see_other, sentence
from memu_agent.ratelimit import client_key
from memu_common.access import Access, add_route
from memu_common.files import read_json_object, write_json_atomic
from memu_firstboot import form
from memu_firstboot.provision import Homeserver, MatrixError, localpart
from memu_firstboot.setup_token import generate_token
from memu_firstboot.state import setup_admin
from memu_firstboot.web import PAGE_INFO, is_set_up

log = logging.getLogger(__name__)

RECOVERY_FILE = "admin-recovery.json"
#: Seconds a recovery code stays valid.
VALID_S = 15 * 60
#: Resets the admin's password: (user ID, new password) -> None; raises MatrixError.
Recoverer = Callable[[str, str], Awaitable[None]]
RECOVERER: web.AppKey[Recoverer] = web.AppKey("memu_agent.recover_pages.recoverer")


def synapse_recoverer(base_url: str, secret_file: Path) -> Recoverer:
    """The real reset, through Synapse at ``base_url`` with the registration shared secret
    read from ``secret_file`` when it is needed."""
    async def recover(user_id: str, password: str) -> None:
        try:
            secret = (await asyncio.to_thread(secret_file.read_text)).strip()
        except OSError as e:
            raise MatrixError(f"the chat server's registration secret is unreadable: {e}",
                              hint="the stack's configuration is damaged") from e
        async with aiohttp.ClientSession() as session:
            await Homeserver(session, base_url).recover_password(secret, user_id, password)
    return recover


def _stored(state_dir: Path, now: float | None) -> tuple[str, float] | None:
    """The pending recovery code and its seconds left, or None (none made, used up, or
    expired)."""
    data = read_json_object(state_dir / RECOVERY_FILE)
    if not data or not isinstance(data.get("code"), str):
        return None
    expires = data.get("expires_at")
    if not isinstance(expires, int | float) or (now or time.time()) >= expires:
        return None
    return str(data["code"]), expires - (now or time.time())


def pending(state_dir: Path, now: float | None = None) -> str | None:
    """The pending recovery code, or None (none made, used up, or expired)."""
    stored = _stored(state_dir, now)
    return stored[0] if stored else None


def for_console(state_dir: Path, now: float | None = None) -> tuple[str, int] | None:
    """The pending recovery code and the whole minutes it stays valid (at least 1), as the
    console shows them (:func:`memu_agent.console.issue_text`); None when none is pending."""
    stored = _stored(state_dir, now)
    if stored is None:
        return None
    code, left = stored
    return code, max(1, math.ceil(left / 60))


async def _greet(request: web.Request, code: str | None) -> None:
    """The console greeting with ``code`` (None: without one), off the event loop: it runs
    ``agetty --reload``."""
    config, info = request.app[CONFIG], request.app[PAGE_INFO]
    text = console.issue_text(config.device_name, None, local_name(info.hostname),
                              recovery=(code, VALID_S // 60) if code else None)
    try:
        await asyncio.to_thread(console.show, config.issue_dir, text)
    except OSError as e:
        log.error("cannot show the recovery code on the console: %s", e)


def _page(request: web.Request, *, status: int = 200, error: str = "") -> web.Response:
    return form_page(request, "recover.html", status=status, error=error,
                     min_password=form.MIN_PASSWORD)


async def recover_form(request: web.Request) -> web.StreamResponse:
    """``GET /admin/recover``: see the module docstring."""
    if not is_set_up(request):
        return see_other("/")
    state_dir = request.app[CONFIG].state_dir
    code = pending(state_dir)
    if code is None:
        code = generate_token()
        try:
            write_json_atomic(state_dir / RECOVERY_FILE,
                              {"code": code, "expires_at": time.time() + VALID_S}, mode=0o600)
        except OSError as e:
            log.error("cannot store a recovery code: %s", e)
            return _page(request, status=500, error="The box could not make a recovery code; "
                                                     "try again in a minute.")
        log.info("admin password recovery: a code is shown on the box's screen")
    await _greet(request, code)
    return _page(request)


async def recover(request: web.Request) -> web.StreamResponse:
    """``POST /admin/recover``: see the module docstring."""
    if not is_set_up(request):
        return see_other("/")
    auth = request.app[AUTH]
    key = client_key(request.remote)
    if wait := wait_s(request):
        return told_to_wait(_page(request, status=429, error=WAIT_WORDS.format(wait)), wait)
    data = {k: str(v) for k, v in (await request.post()).items()}
    state_dir = request.app[CONFIG].state_dir
    admin = setup_admin(state_dir)
    password = data.get("password", "")
    problem = form.password_problem(password, (localpart(admin),) if admin else ())
    if problem is None and password != data.get("password_confirm"):
        problem = "The two passwords are not the same."
    if problem:
        return _page(request, status=400, error=problem)
    code = pending(state_dir)
    given = normalize_code(data.get("code", ""))
    if code is None or not hmac.compare_digest(given.encode(), normalize_code(code).encode()):
        auth.limiter.failed(key)
        log.warning("admin password recovery: wrong or expired code from %s", key)
        return _page(request, status=403, error=(
            "That is not the code on the box's screen (or it expired): open this page "
            "again for a new one."))
    if admin is None:
        return _page(request, status=409, error=(
            "This box does not know who its admin is (it was set up by an older version)."))
    try:
        await request.app[RECOVERER](admin, password)
    except MatrixError as e:
        return _page(request, status=502, error=sentence(e.message))
    auth.limiter.succeeded(key)
    (state_dir / RECOVERY_FILE).unlink(missing_ok=True)
    await _greet(request, None)
    log.info("admin password recovery: the password of %s is reset", admin)
    return form_page(request, "sign_in.html", username=localpart(admin), error="",
                     notice="The admin's password is changed: sign in with it.")


async def _refused(request: web.Request, status: int, error: str, hint: str
                   ) -> web.StreamResponse:
    return _page(request, status=status, error=sentence(error, hint))


def add_routes(app: web.Application, recoverer: Recoverer) -> None:
    """Register ``/admin/recover``; ``recoverer`` resets the admin's password
    (:func:`synapse_recoverer` on the box)."""
    app[RECOVERER] = recoverer
    add_route(app, "GET", "/admin/recover", recover_form, Access.OPEN, name="admin-recover")
    add_route(app, "POST", "/admin/recover", recover, Access.OPEN, name="admin-recover-post")
    on_refusal(app, recover, _refused)
