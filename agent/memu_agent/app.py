"""The agent's aiohttp application: ``/api/status`` plus the first-boot pages.

Routes:
    ``GET /``, ``GET /static/firstboot.css``: from :mod:`memu_firstboot.web`.
    ``GET /api/status``: JSON, see :func:`status`.
    ``GET|POST /api/update``: from :mod:`memu_agent.update_api`.
    ``POST /api/factory-reset``: from :mod:`memu_agent.reset_api`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from memu_agent.config import AgentConfig
from memu_agent.facts import BootInfo, HostPaths, boot_info, hostname, os_version, uptime_s
from memu_agent.reset_api import add_routes as add_reset_routes
from memu_agent.reset_api import system_reboot
from memu_agent.update_api import UPDATER
from memu_agent.update_api import add_routes as add_update_routes
from memu_firstboot import web as firstboot_web
from memu_firstboot.state import setup_state
from memu_ota.updater import Updater


@dataclass(frozen=True)
class BootFacts:
    """Facts that do not change while the agent runs, read once at start.

    Attributes:
        version: the OS version (see :func:`memu_agent.facts.os_version`).
        boot: the boot slot and entry.
    """

    version: str
    boot: BootInfo


CONFIG = web.AppKey("memu_agent.config", AgentConfig)
PATHS = web.AppKey("memu_agent.paths", HostPaths)
FACTS = web.AppKey("memu_agent.facts", BootFacts)


def read_boot_facts(paths: HostPaths) -> BootFacts:
    """Read the facts that stay fixed for this boot."""
    return BootFacts(version=os_version(paths), boot=boot_info(paths))


async def status(request: web.Request) -> web.Response:
    """``GET /api/status``: what the box is and how it is doing, as JSON::

        {"version": "0.1.0",
         "boot": {"slot": "a" | "b" | null, "entry": "memu_0.1.0.efi" | null,
                  "usr_partlabel": "memu-os_0.1.0" | null},
         "uptime_s": 123.4 | null,            # seconds since boot
         "setup": {"state": "pending" | "done"},
         "device_name": "memu",
         "hostname": "memu",
         "update": {...}}                     # see memu_ota.updater.Updater.snapshot

    The setup token is never part of it.
    """
    config = request.app[CONFIG]
    paths = request.app[PATHS]
    facts = request.app[FACTS]
    body = {
        "version": facts.version,
        "boot": {
            "slot": facts.boot.slot,
            "entry": facts.boot.entry,
            "usr_partlabel": facts.boot.usr_partlabel,
        },
        "uptime_s": uptime_s(paths),
        "setup": {"state": str(setup_state(config.state_dir))},
        "device_name": config.device_name,
        "hostname": hostname(paths),
        "update": request.app[UPDATER].snapshot(),
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def make_app(
    config: AgentConfig,
    *,
    paths: HostPaths | None = None,
    facts: BootFacts | None = None,
    updater: Updater | None = None,
    reboot: Callable[[], None] = system_reboot,
) -> web.Application:
    """Build the agent's web application.

    Args:
        config: the agent configuration (device name, state directory).
        paths: where system files live (default: the real ones).
        facts: version and boot info (default: read from ``paths`` now).
        updater: the update orchestrator (default: a new, not started one).
        reboot: how a factory reset reboots the box (default: ``systemctl reboot``).
    """
    paths = paths or HostPaths()
    facts = facts or read_boot_facts(paths)
    app = web.Application()
    app[CONFIG] = config
    app[PATHS] = paths
    app[FACTS] = facts
    app.router.add_get("/api/status", status, name="api-status")
    add_update_routes(app, config, updater or Updater(config.ota, running=facts.version))
    add_reset_routes(app, config, reboot)
    firstboot_web.add_routes(
        app,
        firstboot_web.PageInfo(
            device_name=config.device_name,
            version=facts.version,
            hostname=hostname(paths),
            state_dir=config.state_dir,
        ),
    )
    return app
