"""Factory reset from the admin page: ``POST /api/factory-reset``.

Body ``{"confirm": "erase all family data"}`` (the exact phrase, so no stray request can do
it). Access: admin (the setup code before setup). The agent writes the marker
``<state_dir>/factory-reset`` and reboots; early in the next boot
``memu-factory-reset.service`` erases the family's data and settings on the writable
partition (``/usr/lib/memu/factory-reset``) and the box comes up as on its first boot. Both
OS slots are kept. Without a working admin page, adding ``memu.factory_reset=1`` to the kernel
command line in the boot menu's editor does the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from memu_agent.appkeys import CONFIG
from memu_common import MemuError, run
from memu_common.access import Access, add_route
from memu_common.files import write_atomic

log = logging.getLogger(__name__)

CONFIRM = "erase all family data"
MARKER = "factory-reset"
REBOOT: web.AppKey[Callable[[], None]] = web.AppKey("memu_agent.reset_api.reboot")


def system_reboot() -> None:
    """Ask systemd to reboot (``systemctl reboot``).

    Raises:
        MemuError: systemctl failed.
    """
    run(["systemctl", "reboot"], hint="is systemd running?")


async def post_factory_reset(request: web.Request) -> web.Response:
    """``POST /api/factory-reset``: mark the reset, answer 202, then reboot."""
    config = request.app[CONFIG]
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("confirm") != CONFIRM:
        return web.json_response({"error": "factory reset not confirmed",
                                  "hint": f'send {{"confirm": "{CONFIRM}"}}'}, status=400)
    try:
        write_atomic(config.state_dir / MARKER, b"requested through the API\n")
    except OSError as e:
        log.error("factory reset: cannot write the marker: %s", e)
        return web.json_response({"error": "the box could not record the reset",
                                  "hint": "try again; if it keeps failing, use the boot menu"},
                                 status=500)
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


def add_routes(app: web.Application, reboot: Callable[[], None] = system_reboot) -> None:
    """Register ``POST /api/factory-reset`` on ``app`` (which holds the config under
    :data:`memu_agent.appkeys.CONFIG`)."""
    app[REBOOT] = reboot
    add_route(app, "POST", "/api/factory-reset", post_factory_reset, Access.ADMIN,
              name="api-factory-reset")
