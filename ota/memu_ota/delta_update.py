"""Install a version by delta: rebuild its artifacts from the running slot plus the changed
blocks (:mod:`memu_ota.delta`), then let systemd-sysupdate install them from that local
channel with the image's own transfers (:func:`memu_ota.definitions.render_local`).

The updater tries this first and downloads the whole update as before when it returns None:
updates off by setting (``[ota] delta = false``), an architecture without artifacts, a
channel without delta material, a damaged block or index, no room on ``/var``, or a failed
local install. What went wrong is logged; the full download needs none of it.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import shutil
from collections.abc import Callable
from pathlib import Path

from memu_common import MemuError
from memu_ota import definitions, delta
from memu_ota.config import OtaConfig
from memu_ota.sysupdate import Progress, Sysupdate

log = logging.getLogger(__name__)


def workdir(config: OtaConfig) -> Path:
    """Where a delta update rebuilds artifacts (persistent, so a cut-off one resumes)."""
    return config.state_dir / "delta"


def discard(config: OtaConfig) -> None:
    """Remove what a delta update left (after any successful install)."""
    shutil.rmtree(workdir(config), ignore_errors=True)


async def install(config: OtaConfig, running: str, version: str,
                  on_progress: Callable[[Progress], None]) -> delta.Prepared | None:
    """Install ``version`` by delta; return what it cost, or None when it could not be done
    (the reason is logged and the caller downloads the update whole). Never raises
    :class:`MemuError`."""
    if not config.delta:
        return None
    arch = delta.ARCH.get(platform.machine())
    if arch is None:
        log.warning("delta updates: no artifacts for %s", platform.machine())
        return None
    try:
        url = definitions.source_url(config.base_url, config.channel)
        sources = delta.running_sources(config.esp_dirs, running)
        prepared = await asyncio.to_thread(delta.prepare, delta.Http(), url, version, arch,
                                           sources, workdir(config), config.keyring)
        local = config.runtime_dir / "sysupdate-delta.d"
        definitions.render_local(config.template_dir, local, prepared.directory,
                                 config.boot_tries)
        await Sysupdate(config, local).update(version, on_progress)
    except MemuError as e:
        log.warning("delta update to %s not possible (%s); downloading it whole",
                    version, e.message)
        return None
    discard(config)
    log.info("delta update to %s: %d bytes downloaded for %d bytes of artifacts (%.1f %%)",
             version, prepared.fetched, prepared.size,
             100.0 * prepared.fetched / max(prepared.size, 1))
    return prepared
