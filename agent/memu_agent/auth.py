"""The agent's one auth layer: an aiohttp middleware that enforces every route's declared
:class:`memu_common.access.Access`.

On every request it
1. refuses a route that declared no access (500: a programming error, never let through);
2. on a state-changing request (any method but GET/HEAD/OPTIONS) and on every non-open
   route, checks the ``Host`` header against the box's own names and IP literals (DNS
   rebinding) and the ``Origin`` / ``Sec-Fetch-Site`` headers against the host (a web page
   elsewhere driving the box through a family member's browser);
3. for non-open routes, gathers the credentials presented, makes clients that keep guessing
   wait (429, see :mod:`memu_agent.ratelimit`), and lets :func:`decide` say yes or no.

Credentials (:class:`Credential`):
    setup code: ``X-Memu-Setup-Code: k7m4-rq2x-hn9c``, or a ``setup_code`` field in a JSON
        or form body, or (``GET`` on a route registered with :func:`code_in_link`: the QR
        code on the box's screen) a ``code`` query parameter. Spaces and dashes are ignored,
        case too; compared in constant time, never logged or echoed.
    claim / admin session: the ``memu_session`` cookie (:mod:`memu_agent.sessions`).
    API token: ``Authorization: Bearer <token>`` with the token in ``<state_dir>/api-token``
        (mode 0600, written by setup), for scripts.

A state-changing request a browser could have been made to send (a form, or one carrying
the session cookie) must also carry the page's CSRF token (:mod:`memu_agent.csrf`).

Answers are JSON ``{"error": ..., "hint": ...}``: 401 nothing usable presented, 403 wrong
credentials, a refused Host/Origin or a missing CSRF token, 410 a setup route after setup,
429 with ``Retry-After`` while a client must wait. A route a browser form posts to can
register a page that shows the refusal instead (:func:`on_refusal`), e.g. the form again
with the message next to the setup code.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from memu_agent import csrf
from memu_agent.ratelimit import FailureLimiter, client_key
from memu_agent.sessions import COOKIE, SessionKind, Sessions
from memu_common.access import Access, Handler, route_access
from memu_firstboot.setup_token import TOKEN_FILE
from memu_firstboot.state import API_TOKEN_FILE, SetupState, setup_state

log = logging.getLogger(__name__)

CODE_HEADER = csrf.CODE_HEADER
CODE_FIELD = "setup_code"
CODE_QUERY = "code"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HEADERS = {"Cache-Control": "no-store"}


class Credential(enum.StrEnum):
    """What a request can prove."""

    SETUP_CODE = "setup-code"
    CLAIM_SESSION = "claim-session"
    ADMIN_SESSION = "admin-session"
    API_TOKEN = "api-token"


@dataclass(frozen=True)
class Verdict:
    """What :func:`decide` says: ``status`` 0 lets the request in; otherwise the HTTP
    status, the error and a hint to answer with."""

    status: int
    error: str = ""
    hint: str = ""


ALLOW = Verdict(0)
_BEFORE_SETUP = (Credential.SETUP_CODE, Credential.CLAIM_SESSION)
_AFTER_SETUP = (Credential.ADMIN_SESSION, Credential.API_TOKEN)


def decide(access: Access, *, set_up: bool, valid: Iterable[Credential],
           wrong: bool) -> Verdict:
    """Whether a request may use a route (pure; the whole policy in one place).

    Args:
        access: the route's declared access.
        set_up: whether the box has been set up.
        valid: the credentials the request presented that checked out.
        wrong: whether it presented a credential that did not check out.
    """
    if access in (Access.OPEN, Access.PROXIED):
        return ALLOW
    if access is Access.CLAIM and set_up:
        return Verdict(410, "this box is already set up",
                       "sign in on the box's page as the family's admin")
    accepted = _AFTER_SETUP if set_up else _BEFORE_SETUP
    valid = set(valid)
    if valid.intersection(accepted):
        return ALLOW
    if wrong:
        what = "sign-in or API token" if set_up else "setup code"
        return Verdict(403, f"wrong {what}",
                       "check it and try again" if set_up else
                       "type the setup code shown on the box's screen")
    if valid:  # right, but not what this route takes in this state
        return Verdict(403, "the setup code only works before the box is set up", "sign in "
                       "as the family's admin, or send the API token (Authorization: Bearer)")
    if set_up:
        return Verdict(401, "this needs the family's admin",
                       "sign in, or send the API token (Authorization: Bearer <token>)")
    return Verdict(401, "this needs the setup code shown on the box's screen",
                   f"send it as {CODE_HEADER} (or claim the box on its page)")


def host_name(host: str) -> str:
    """A ``Host`` header without its port: ``memu.local:8080`` → ``memu.local``,
    ``[fe80::1]:80`` → ``[fe80::1]``; a bare IPv6 literal stays whole."""
    host = host.strip()
    if host.startswith("["):
        literal, _, _ = host.partition("]")
        return literal + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str | None, names: Iterable[str]) -> bool:
    """True when a ``Host`` header names the box: an IP literal (with or without port) or
    one of ``names`` (compared case-insensitively, without a trailing dot)."""
    if not host:
        return False
    name = host_name(host)
    if name.startswith("["):  # [v6]:port
        try:
            ipaddress.IPv6Address(name[1:-1].split("%", 1)[0])
        except ValueError:
            return False
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    name = name.lower().rstrip(".")
    return name in {n.lower().rstrip(".") for n in names}


def origin_allowed(origin: str | None, fetch_site: str | None, host: str) -> bool:
    """True when a state-changing request comes from the box's own pages or from a
    non-browser client: no ``Origin`` (or one whose host:port equals ``host``), and no
    ``Sec-Fetch-Site`` of ``cross-site``/``same-site``. ``Origin: null`` is refused."""
    if fetch_site and fetch_site.strip().lower() in ("cross-site", "same-site"):
        return False
    if origin is None:
        return True
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc.lower() == host.strip().lower()


def normalize_code(code: str) -> str:
    """A typed setup code as stored: lower case, without spaces and dashes."""
    return "".join(c for c in code.lower() if c not in " -\t")


def _read_secret(path: Path) -> str | None:
    try:
        value = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


@dataclass
class Auth:
    """What the middleware needs; one per app under :data:`AUTH`.

    Attributes:
        state_dir: the agent's state directory (setup code, API token, setup marker).
        sessions: the box's sessions.
        limiter: back-off for clients that keep guessing.
        host_names: the names the box answers to (called per request: they can change).
    """

    state_dir: Path
    sessions: Sessions
    limiter: FailureLimiter
    host_names: Callable[[], Iterable[str]]

    def set_up(self) -> bool:
        return setup_state(self.state_dir) is SetupState.DONE

    def check_code(self, given: str) -> bool:
        """Constant-time comparison of a typed setup code with the box's."""
        expected = _read_secret(self.state_dir / TOKEN_FILE)
        if expected is None:
            return False
        return hmac.compare_digest(normalize_code(given).encode(),
                                   normalize_code(expected).encode())

    def check_api_token(self, given: str) -> bool:
        """Constant-time comparison with ``<state_dir>/api-token``; False without one."""
        expected = _read_secret(self.state_dir / API_TOKEN_FILE)
        if expected is None:
            return False
        return hmac.compare_digest(given.strip().encode(), expected.encode())


AUTH = web.AppKey("memu_agent.auth", Auth)
#: A page showing a refusal: (request, status, error, hint) → the answer.
RefusalPage = Callable[[web.Request, int, str, str], Awaitable[web.StreamResponse]]
REFUSAL_PAGES: web.AppKey[dict[Handler, RefusalPage]] = web.AppKey("memu_agent.auth.pages")


def on_refusal(app: web.Application, handler: Handler, page: RefusalPage) -> None:
    """Show refusals of requests to ``handler`` with ``page`` instead of a JSON error (for
    routes that browser forms post to)."""
    app.setdefault(REFUSAL_PAGES, {})[handler] = page


def wait_s(request: web.Request) -> int:
    """Whole seconds the client of ``request`` must still wait after wrong tries of a
    secret (code, token, password) before its next one; 0 when it may try now."""
    return math.ceil(request.app[AUTH].limiter.retry_after(client_key(request.remote)))


def told_to_wait(resp: web.StreamResponse, wait: int) -> web.StreamResponse:
    """``resp`` (a 429 answer) with ``Retry-After: wait`` (RFC 9110 §10.2.3)."""
    resp.headers["Retry-After"] = str(wait)
    return resp


#: A page's words for a client that must wait (the seconds are filled in).
WAIT_WORDS = "Too many wrong tries from this device: wait {} seconds."


CODE_LINKS: web.AppKey[set[Handler]] = web.AppKey("memu_agent.auth.code_links")


def code_in_link(app: web.Application, handler: Handler) -> None:
    """Let ``GET`` requests to ``handler`` present the setup code as ``?code=`` (a link or
    QR code carrying it); the handler should redirect, so the code leaves the address bar."""
    app.setdefault(CODE_LINKS, set()).add(handler)


def error(status: int, message: str, hint: str = "") -> web.Response:
    """A JSON error answer ``{"error": message, "hint": hint}``."""
    return web.json_response({"error": message, "hint": hint or None}, status=status,
                             headers=_HEADERS)


async def presented_code(request: web.Request) -> str | None:
    """The setup code ``request`` presents (header first, then body field, then the link's
    query parameter where the route allows it), or None."""
    if request.method == "GET" and CODE_QUERY in request.query and (
            request.match_info.route.handler in request.app.get(CODE_LINKS, set())):
        return request.query[CODE_QUERY]
    return request.headers.get(CODE_HEADER) or await _body_code(request)


async def _body_code(request: web.Request) -> str | None:
    if request.method in SAFE_METHODS or not request.body_exists:
        return None
    try:
        if request.content_type == "application/json":
            body = await request.json()
            value = body.get(CODE_FIELD) if isinstance(body, dict) else None
        elif request.content_type == "application/x-www-form-urlencoded":
            value = (await request.post()).get(CODE_FIELD)
        else:
            return None
    except ValueError:
        return None
    return value if isinstance(value, str) else None


async def presented(request: web.Request, auth: Auth) -> tuple[set[Credential], bool]:
    """The credentials ``request`` presents that check out, and whether any did not."""
    valid: set[Credential] = set()
    wrong = False
    code = await presented_code(request)
    if code is not None:
        if auth.check_code(code):
            valid.add(Credential.SETUP_CODE)
        else:
            wrong = True
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        if auth.check_api_token(token):
            valid.add(Credential.API_TOKEN)
        else:
            wrong = True
    session = request.cookies.get(COOKIE)
    if session:  # an unknown session is a stale cookie, not a guess at 256 bits
        kind = auth.sessions.kind_of(session)
        if kind is SessionKind.CLAIM:
            valid.add(Credential.CLAIM_SESSION)
        elif kind is SessionKind.ADMIN:
            valid.add(Credential.ADMIN_SESSION)
    return valid, wrong


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Enforce the route's declared access (see the module docstring)."""
    route = request.match_info.route
    if route.resource is None:  # no route matched: let aiohttp answer 404/405
        return await handler(request)
    access = route_access(request.app, route.handler)
    if access is None:
        log.error("%s %s has no declared access; refusing it", request.method, request.path)
        return error(500, "this route declares no access policy", "this is a bug in memu-agent")
    if access is Access.PROXIED:  # the service behind authenticates (see Access)
        return await handler(request)
    auth = request.app[AUTH]
    page = request.app.get(REFUSAL_PAGES, {}).get(route.handler)

    async def refuse(status: int, message: str, hint: str) -> web.StreamResponse:
        if page is not None:
            return await page(request, status, message, hint)
        return error(status, message, hint)

    unsafe = request.method not in SAFE_METHODS
    if unsafe or access is not Access.OPEN:
        host = request.headers.get("Host", "")
        if not host_allowed(host, auth.host_names()):
            return error(403, "this box does not answer to that host name",
                         "open it as http://memu.local/ or by its IP address")
        if unsafe and not origin_allowed(request.headers.get("Origin"),
                                         request.headers.get("Sec-Fetch-Site"), host):
            return error(403, "requests from other web sites are refused",
                         "use the box's own page")
        if unsafe and csrf.needed(request) and not await csrf.valid(request):
            return await refuse(403, "this page has expired",
                                "reload the page and send it again (it needs cookies on)")
    if access is Access.OPEN:
        return await handler(request)
    key = client_key(request.remote)
    if wait := wait_s(request):
        return told_to_wait(await refuse(429, "too many wrong tries from this device",
                                         f"wait {wait} seconds, then try again"), wait)
    valid, wrong = await presented(request, auth)
    verdict = decide(access, set_up=auth.set_up(), valid=valid, wrong=wrong)
    if verdict.status:
        if wrong and verdict.status == 403:
            auth.limiter.failed(key)
            log.warning("%s %s: wrong credentials from %s", request.method, request.path, key)
        resp = await refuse(verdict.status, verdict.error, verdict.hint)
        if verdict.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="memu"'
        return resp
    if not wrong:
        auth.limiter.succeeded(key)
    return await handler(request)
