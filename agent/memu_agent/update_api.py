"""The update endpoints: ``GET /api/update`` and ``POST /api/update``.

``POST /api/update`` takes JSON::

    {"action": "check"}                          # look for a newer version
    {"action": "install", "version": "0.2.0"?}   # default: the newest offered
    {"action": "reboot", "at": "2025-01-01T03:00:00+00:00"?}   # default: now
    {"action": "source", "channel": "beta"?, "base_url": "https://…/"?}

and answers 202 with the update snapshot (see :meth:`memu_ota.updater.Updater.snapshot`);
409 ``{"error", "hint"}`` when another operation runs or the request is refused in the
current situation (not newer, blocked, nothing to reboot into); 400 for malformed input;
401/403/429 from the auth layer.

Access (:mod:`memu_agent.auth`): ``GET /api/update`` is open (the same snapshot is in
``/api/status``); ``POST /api/update`` needs the admin (the setup code before setup).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from aiohttp import web

from memu_common import MemuError
from memu_common.access import Access, add_route
from memu_ota.updater import UpdateBusy, UpdateInvalid, Updater, UpdateRefused

log = logging.getLogger(__name__)

UPDATER = web.AppKey("memu_agent.updater", Updater)
_HEADERS = {"Cache-Control": "no-store"}


def _error(status: int, message: str, hint: str | None = None) -> web.Response:
    return web.json_response({"error": message, "hint": hint}, status=status, headers=_HEADERS)


async def get_update(request: web.Request) -> web.Response:
    """``GET /api/update``: the update snapshot."""
    return web.json_response(request.app[UPDATER].snapshot(), headers=_HEADERS)


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise UpdateInvalid(f"{key!r} must be a non-empty string")
    return value


def _time(value: str | None) -> dt.datetime | None:
    if value is None or value == "now":
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UpdateInvalid(f"'at' is not an ISO 8601 time: {value!r}",
                            hint='e.g. "2025-01-01T03:00:00+00:00" or "now"') from None
    if when.tzinfo is None:
        raise UpdateInvalid("'at' needs a time zone (e.g. +00:00)")
    return when


async def post_update(request: web.Request) -> web.Response:
    """``POST /api/update``: start an action; 202 + snapshot."""
    updater = request.app[UPDATER]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "the body must be JSON", '{"action": "check"}')
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object", '{"action": "check"}')
    action = body.get("action")
    try:
        if action == "check":
            updater.request_check()
        elif action == "install":
            updater.request_install(_opt_str(body, "version"))
        elif action == "reboot":
            updater.reboot(_time(_opt_str(body, "at")))
        elif action == "source":
            updater.set_source(_opt_str(body, "channel"), _opt_str(body, "base_url"))
        else:
            return _error(400, f"unknown action {action!r}",
                          'use "check", "install", "reboot" or "source"')
    except UpdateInvalid as e:
        return _error(400, e.message, e.hint)
    except (UpdateBusy, UpdateRefused) as e:
        return _error(409, e.message, e.hint)
    except MemuError as e:
        log.error("update %s: %s", action, e)
        return _error(500, e.message, e.hint)
    log.info("update: %s requested", action)
    return web.json_response(updater.snapshot(), status=202, headers=_HEADERS)


def add_routes(app: web.Application, updater: Updater) -> None:
    """Register the update endpoints and what they need on ``app``."""
    app[UPDATER] = updater
    add_route(app, "GET", "/api/update", get_update, Access.OPEN, name="api-update")
    add_route(app, "POST", "/api/update", post_update, Access.ADMIN, name="api-update-post")
