"""Factory reset from the admin page: ``POST /api/factory-reset``.

Body ``{"confirm": "erase all family data"}`` (the exact phrase, so no stray request can do
it). Same authentication as the update API. The agent writes the marker
``<state_dir>/factory-reset`` and reboots; early in the next boot
``memu-factory-reset.service`` erases the family's data and settings on the writable
partition (``/usr/lib/memu/factory-reset``) and the box comes up as on its first boot. Both
OS slots are kept. Without a working admin page, adding ``memu.factory_reset=1`` to the kernel
command line in the boot menu's editor does the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from aiohttp import web

from memu_agent.config import AgentConfig
from memu_agent.update_api import authorized
from memu_common import MemuError, run

log = logging.getLogger(__name__)

CONFIRM = "erase all family data"
MARKER = "factory-reset"
REBOOT: web.AppKey[Callable[[], None]] = web.AppKey("memu_agent.reset_api.reboot")
RESET_CONFIG = web.AppKey("memu_agent.reset_api.config", AgentConfig)


def system_reboot() -> None:
    """Ask systemd to reboot (``systemctl reboot``).

    Raises:
        MemuError: systemctl failed.
    """
    run(["systemctl", "reboot"], hint="is systemd running?")


async def post_factory_reset(request: web.Request) -> web.Response:
    """``POST /api/factory-reset``: mark the reset, answer 202, then reboot."""
    config = request.app[RESET_CONFIG]
    if not authorized(request, config):
        return web.json_response({"error": "this box is set up; factory reset needs its API "
                                  "token", "hint": "send Authorization: Bearer <token>"},
                                 status=401)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("confirm") != CONFIRM:
        return web.json_response({"error": "factory reset not confirmed",
                                  "hint": f'send {{"confirm": "{CONFIRM}"}}'}, status=400)
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    marker = config.state_dir / MARKER
    tmp = marker.with_suffix(".tmp")
    tmp.write_text("requested through the API\n")
    os.replace(tmp, marker)
    log.warning("factory reset requested: erasing family data on the next boot; rebooting")
    reboot = request.app[REBOOT]

    def _reboot() -> None:
        try:
            reboot()
        except MemuError as e:
            log.error("factory reset: reboot failed: %s", e)

    asyncio.get_running_loop().call_later(1.0, _reboot)
    return web.json_response({"state": "resetting", "message": "the box restarts now and "
                              "comes back as on its first day; both OS versions are kept"},
                             status=202)


def add_routes(app: web.Application, config: AgentConfig,
               reboot: Callable[[], None] = system_reboot) -> None:
    """Register ``POST /api/factory-reset`` on ``app``."""
    app[RESET_CONFIG] = config
    app[REBOOT] = reboot
    app.router.add_post("/api/factory-reset", post_factory_reset, name="api-factory-reset")
