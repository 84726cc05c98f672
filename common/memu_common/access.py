"""Who may call a web route: every route of the box's web app declares it when it is added.

Routes are added with :func:`add_route`, which records the route's :class:`Access` in the
app; the agent's auth middleware (``memu_agent.auth``) looks it up on every request and
refuses a route that declared nothing. Packages that add routes (the agent, the first-boot
pages) use this one table, so there is one place that says who may call what.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Access(enum.StrEnum):
    """A route's policy.

    OPEN: anyone on the network; only for read-only routes (pages, status, static files).
    CLAIM: whoever holds the box before it is set up: the per-device setup code shown on
        its screen, or the claim session that code bought. Closed (410) once set up.
    ADMIN: the family's admin: before setup the same as CLAIM (the setup code), after setup
        an admin session or the API token (``Authorization: Bearer``) for scripts.
    PROXIED: passed to a service of the stack that authenticates its own users (Matrix:
        access tokens in a header, no cookies); the agent checks nothing (not even the host
        name: the box is also reached by its Tailscale name).
    """

    OPEN = "open"
    CLAIM = "claim"
    ADMIN = "admin"
    PROXIED = "proxied"


ROUTE_ACCESS: web.AppKey[dict[Handler, Access]] = web.AppKey("memu_common.route_access")


def add_route(
    app: web.Application,
    method: str,
    path: str,
    handler: Handler,
    access: Access,
    *,
    name: str | None = None,
) -> None:
    """Register ``handler`` for ``method path`` on ``app`` and record its ``access``.

    A ``GET`` route also answers ``HEAD`` (aiohttp's default), under the same policy.

    Raises:
        ValueError: ``handler`` was already declared with a different access.
    """
    table = app.setdefault(ROUTE_ACCESS, {})
    if table.get(handler, access) is not access:
        raise ValueError(f"{handler.__name__} declared both {table[handler]} and {access}")
    table[handler] = access
    if method == "GET":
        app.router.add_get(path, handler, name=name)
    else:
        app.router.add_route(method, path, handler, name=name)


def route_access(app: web.Application, handler: object) -> Access | None:
    """The access ``handler`` was declared with on ``app``, or None if it declared none."""
    return app.get(ROUTE_ACCESS, {}).get(handler)  # type: ignore[call-overload,no-any-return]
