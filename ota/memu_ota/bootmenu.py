"""Which boot entry systemd-boot starts by default while an update waits for its restart.

``loader.conf`` (``default memu-os_*.efi``) makes the newest Memu OS entry with tries left
the default, so a freshly written update would start at the next power-up even if that is a
power cut and not the restart the family chose. The updater therefore pins the running entry
as the default before sysupdate writes anything (``bootctl set-default @current``, which
sets the EFI variable ``LoaderEntryDefault``; bootctl(1), systemd-boot(7)) and removes the
pin right before the chosen restart (``bootctl set-default ""``), after which boot counting
decides as usual: three tries, then back to the old slot.

On the device bootctl runs in a transient unit through ``systemd-run`` (the agent's own
sandbox keeps ``/sys`` read-only); tests point ``OtaConfig.bootctl`` at a stand-in.
"""

from __future__ import annotations

import logging

from memu_common import MemuError
from memu_ota.config import OtaConfig
from memu_ota.proc import run_async

log = logging.getLogger(__name__)

TIME_LIMIT_S = 60.0


class BootMenuError(MemuError):
    """bootctl could not change the default boot entry."""


def argv(config: OtaConfig, *args: str) -> list[str]:
    """The command line for ``bootctl <args>`` (wrapped in ``systemd-run`` when isolated)."""
    tool = [str(config.bootctl), *args]
    if not config.isolate:
        return tool
    return ["systemd-run", "--quiet", "--wait", "--pipe", "--collect",
            "--service-type=exec", "--", *tool]


async def _set_default(config: OtaConfig, entry: str, what: str) -> None:
    result = await run_async(argv(config, "set-default", entry), time_limit_s=TIME_LIMIT_S)
    if result.returncode != 0:
        raise BootMenuError(f"could not {what}: {result.stderr_tail() or 'bootctl failed'}",
                            hint="see journalctl -u memu-agent; is this an EFI boot?")


async def pin_running(config: OtaConfig) -> None:
    """Make the running boot entry the default until :func:`unpin`.

    Raises:
        BootMenuError: bootctl failed (e.g. no EFI variables).
    """
    await _set_default(config, "@current", "keep the running version as the boot default")


async def unpin(config: OtaConfig) -> None:
    """Remove the pinned default; ``loader.conf`` decides again.

    Raises:
        BootMenuError: bootctl failed; the next boot would start the pinned entry.
    """
    await _set_default(config, "", "make the new version the boot default")
