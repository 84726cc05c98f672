"""The boot chain behind one seam: how a new version is installed for the firmware to find,
how the box reboots into it, what this boot was, and how a good boot is committed.

One backend per boot chain (:data:`memu_common.boards.BootBackendName`):
:class:`~memu_ota.boot.systemd_boot.SystemdBoot` (UEFI, UKIs with boot counting: the N100)
and :class:`~memu_ota.boot.tryboot.TryBoot` (the Raspberry Pi firmware's A/B boot
partitions and one-shot tryboot flag: the Pi 5).
The rest of memu_ota and the agent only use :class:`BootBackend`; :func:`for_board` picks the
one a board uses.
"""

from __future__ import annotations

from pathlib import Path

from memu_common.boards import Board
from memu_ota.boot.api import BootBackend, EntryState, Firmware, ThisBoot
from memu_ota.boot.systemd_boot import SystemdBoot
from memu_ota.boot.tryboot import SELECTOR_BY_LABEL, TryBoot
from memu_ota.config import OtaConfig

__all__ = ["BootBackend", "EntryState", "Firmware", "SystemdBoot", "ThisBoot", "TryBoot",
           "for_board"]


def for_board(board: Board, config: OtaConfig, running: str, firmware: Firmware | None = None,
              *, selector: Path | None = None) -> BootBackend:
    """The boot backend of ``board``.

    Args:
        config: the update settings (systemd-boot's ``esp_dirs``; the ``state_dir`` where
            tryboot records a trial).
        running: the running OS version.
        firmware: where the firmware's facts are read (default: the real places; tests
            point it at a fake tree).
        selector: tryboot's selector partition on the boot disk (default, when the caller
            cannot tell the boot disk: the partition labelled ``memu-autoboot``).
    """
    if board.boot == "tryboot":
        return TryBoot(running, config.state_dir, firmware=firmware,
                       selector=selector or SELECTOR_BY_LABEL)
    return SystemdBoot(config.esp_dirs, firmware)
