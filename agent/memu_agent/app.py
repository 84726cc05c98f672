"""The agent's aiohttp application: ``/api/status`` plus the first-boot pages.

Routes (every one declares its access, enforced by :mod:`memu_agent.auth`):
    ``GET /``, ``GET /static/firstboot.css``: open; from :mod:`memu_firstboot.web`.
    ``GET /api/status``: open; JSON, see :func:`status`.
    ``GET /api/update`` (open), ``POST /api/update`` (admin): :mod:`memu_agent.update_api`.
    ``POST /api/factory-reset`` (admin): :mod:`memu_agent.reset_api`.
    ``POST /api/claim`` (claim): :mod:`memu_agent.claim_api`.
    ``POST /setup``, ``/setup/…``, ``GET /api/setup``: the setup flow,
        :mod:`memu_agent.setup_pages`.
    ``/admin``, ``/admin/…``: the admin's sign-in and pages, :mod:`memu_agent.admin_pages`;
        ``/admin/recover``: a forgotten admin password, :mod:`memu_agent.recover_pages`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from memu_agent import (
    admin_pages,
    assistant,
    claim_api,
    front_door,
    npu,
    recover_pages,
    reset_api,
    setup_pages,
    stack,
    storage,
    update_api,
)
from memu_agent.appkeys import CONFIG, PATHS
from memu_agent.auth import AUTH, Auth, auth_middleware
from memu_agent.config import AgentConfig
from memu_agent.facts import (
    BootInfo,
    HostPaths,
    boot_chain,
    boot_info,
    hostname,
    local_name,
    os_variant,
    os_version,
    uptime_s,
)
from memu_agent.ratelimit import FailureLimiter
from memu_agent.reset_api import system_reboot
from memu_agent.sessions import Sessions
from memu_agent.tailnet import Tailnet, https_middleware
from memu_agent.tailnet import add as add_tailnet
from memu_agent.update_api import UPDATER
from memu_common import MemuError
from memu_common.access import Access, add_route
from memu_common.files import read_json_object
from memu_firstboot import photos, stack_config
from memu_firstboot import web as firstboot_web
from memu_firstboot.provision import SYNAPSE_URL
from memu_firstboot.state import SetupState, setup_state
from memu_ota.boot import BootBackend
from memu_ota.config import OtaConfig
from memu_ota.updater import Updater

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BootFacts:
    """Facts that do not change while the agent runs, read once at start.

    Attributes:
        version: the OS version (see :func:`memu_agent.facts.os_version`).
        boot: the boot slot and entry.
        variant: the image's build variant ("hailo"), or None for the plain image; updates
            come from the variant's own artifacts in the channel (memu_common.osrelease).
    """

    version: str
    boot: BootInfo
    variant: str | None = None


FACTS = web.AppKey("memu_agent.facts", BootFacts)


def host_names(name: str) -> tuple[str, ...]:
    """The names the box answers to besides its IP addresses: its host name, the same
    under ``.local`` (mDNS) and ``localhost``."""
    return (name, local_name(name), "localhost")


def read_boot_facts(paths: HostPaths, ota: OtaConfig) -> tuple[BootFacts, BootBackend]:
    """Read the facts that stay fixed for this boot, and the boot chain they came from,
    which first notes this boot (:meth:`memu_ota.boot.BootBackend.begin_boot`; a failure
    there is logged: the agent still starts).

    Raises:
        MemuError: the image names a board this version does not know.
    """
    version = os_version(paths)
    boot = boot_chain(paths, ota, version)
    try:
        if done := boot.begin_boot():
            log.info("boot chain: %s", done)
    except MemuError as e:
        log.error("boot chain: %s", e)
    return BootFacts(version=version, boot=boot_info(paths, boot),
                     variant=os_variant(paths)), boot


async def stack_status(paths: HostPaths) -> dict[str, Any]:
    """The ``stack`` object of ``/api/status``: the image preload's and pull's reports
    (:func:`memu_agent.stack.read_preload`), ``data`` (what the stack's last start did with
    its database: :func:`memu_agent.stack.prepare_data`), ``model`` (the LLM's download:
    :mod:`memu_agent.model`), ``services``
    (:func:`memu_agent.stack.services`, empty before setup) and, when Docker does not answer,
    ``error``."""
    out = stack.read_preload(paths.preload_status, paths.pull_status)
    out["data"] = read_json_object(paths.stack_data_status) or {"step": "not started"}
    out["model"] = read_json_object(paths.model_status) or {"state": "not started"}
    try:
        out["services"] = await stack.services(paths.docker_socket)
    except OSError as e:
        out["services"] = {}
        out["error"] = f"Docker does not answer: {e}"
    return out


async def status(request: web.Request) -> web.Response:
    """``GET /api/status``: what the box is and how it is doing, as JSON::

        {"version": "0.1.0",
         "variant": "hailo" | null,           # the image's build variant (os-release)
         "boot": {"slot": "a" | "b" | null, "entry": "memu_0.1.0.efi" | null,
                  "usr_partlabel": "memu-os_0.1.0" | null},
         "uptime_s": 123.4 | null,            # seconds since boot
         "setup": {"state": "pending" | "done"},
         "device_name": "memu",
         "hostname": "memu",
         "update": {...},                     # see memu_ota.updater.Updater.snapshot
         "stack": {...},                      # see stack_status
         "assistant": {...},                  # its chat session: memu_agent.assistant
         "storage": {"state": "ok" | "low" | "full" | "unknown", "total_bytes": int,
                     "free_bytes": int, "message": str},   # memu_agent.storage
         "npu": {"state": "absent" | "no-driver" | "no-device" | "ready",
                 "pci": str | null, "driver": str | null, "device": str | null}}
                                              # a Hailo-8/8L: memu_agent.npu

    The setup token is never part of it.
    """
    config = request.app[CONFIG]
    paths = request.app[PATHS]
    facts = request.app[FACTS]
    body = {
        "version": facts.version,
        "variant": facts.variant,
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
        "stack": await stack_status(paths),
        "assistant": request.app[assistant.WATCH].snapshot(),
        "storage": asdict(storage.measure(paths.data)),
        "npu": npu.find(paths.sys, paths.dev).report(),
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def make_app(
    config: AgentConfig,
    *,
    paths: HostPaths | None = None,
    facts: BootFacts | None = None,
    updater: Updater | None = None,
    reboot: Callable[[], None] = system_reboot,
    limiter: FailureLimiter | None = None,
    stack_url: str = front_door.STACK_URL,
    setup_runner: setup_pages.SetupRunner | None = None,
    admin_checker: admin_pages.Checker | None = None,
    synapse_url: str = SYNAPSE_URL,
    on_setup_exit: Callable[[int], Awaitable[None]] | None = None,
    recoverer: recover_pages.Recoverer | None = None,
    immich_url: str = photos.IMMICH_URL,
    tailnet: Tailnet | None = None,
    assistant_watch: assistant.Watch | None = None,
) -> web.Application:
    """Build the agent's web application.

    Args:
        config: the agent configuration (device name, state directory).
        paths: where system files live (default: the real ones).
        facts: version and boot info (default: read from ``paths`` now).
        updater: the update orchestrator (default: a new, not started one).
        reboot: how a factory reset reboots the box (default: ``systemctl reboot``).
        limiter: back-off for wrong credentials (default: 5 free tries, then 1 s doubling
            up to 5 minutes).
        stack_url: the stack's nginx, where the front door forwards the stack's routes.
        setup_runner: runs the first-boot apply (default: ``python3 -m
            memu_firstboot.apply`` on this box, calling ``on_setup_exit`` when it ends).
        admin_checker: checks the admin's name and password (default: Synapse at
            ``synapse_url``, :func:`memu_agent.admin_pages.synapse_checker`).
        synapse_url: Synapse's client and admin APIs from the box's inside (the admin
            page's members).
        on_setup_exit: called with the setup apply's exit status when it ends.
        recoverer: resets a forgotten admin password (default: Synapse at ``synapse_url``
            with the stack's registration secret).
        immich_url: Immich on loopback, where the admin's sign-in makes photos'
            administrator (:mod:`memu_firstboot.photos`).
        tailnet: where the box's tailnet address comes from (default: the stack's
            tailscaled, :mod:`memu_agent.tailnet`).
        assistant_watch: checks the assistant's chat session and signs it back in
            (default: ``paths.stack_config`` and Synapse at ``synapse_url``).
    """
    paths = paths or HostPaths()
    if facts is None or updater is None:
        read, boot = read_boot_facts(paths, config.ota)
        facts = facts or read
        updater = updater or Updater(config.ota, running=facts.version, boot=boot)
    tailnet = tailnet or Tailnet()
    app = web.Application(middlewares=[https_middleware, auth_middleware])
    app[CONFIG] = config
    app[PATHS] = paths
    app[FACTS] = facts
    app[AUTH] = Auth(
        state_dir=config.state_dir,
        sessions=Sessions(config.state_dir),
        limiter=limiter if limiter is not None else FailureLimiter(),
        host_names=lambda: (*host_names(hostname(paths)), *tailnet.names()),
    )
    add_route(app, "GET", "/api/status", status, Access.OPEN, name="api-status")
    update_api.add_routes(app, updater)
    reset_api.add_routes(app, reboot)
    claim_api.add_routes(app, updater.reset_source)
    front_door.add_routes(app, stack_url)
    add_tailnet(app, tailnet)
    assistant.add(app, assistant_watch or assistant.Watch(paths.stack_config, synapse_url))
    firstboot_web.add_routes(
        app,
        firstboot_web.PageInfo(
            device_name=config.device_name,
            version=facts.version,
            hostname=hostname(paths),
            state_dir=config.state_dir,
        ),
        root=False,
    )
    setup_pages.add_routes(app, setup_runner or setup_pages.SetupRunner(
        config.state_dir, on_exit=on_setup_exit))
    admin_pages.add_routes(app, admin_checker or admin_pages.synapse_checker(synapse_url),
                           synapse_url, immich_url)
    recover_pages.add_routes(app, recoverer or recover_pages.synapse_recoverer(
        synapse_url, stack_config.CONFIG_DIR / stack_config.REGISTRATION_SECRET))
    # Last: its catch-all takes only what no route above claims.
    front_door.add_web_client(
        app, lambda: setup_state(config.state_dir) is SetupState.DONE, setup_pages.index)
    return app
