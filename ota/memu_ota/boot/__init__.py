"""The boot chain behind one seam: how a new version is installed for the firmware to find,
how the box reboots into it, what this boot was, and how a good boot is committed.

One backend per boot chain (:data:`memu_common.boards.BootBackendName`):
:class:`~memu_ota.boot.systemd_boot.SystemdBoot` (UEFI, UKIs with boot counting: the N100).
The rest of memu_ota and the agent only use :class:`BootBackend`; :func:`for_board` picks the
one a board uses.
"""

from __future__ import annotations

from pathlib import Path

from memu_common import MemuError
from memu_common.boards import Board
from memu_ota.boot.api import BootBackend, EntryState, Firmware, ThisBoot
from memu_ota.boot.systemd_boot import SystemdBoot

__all__ = ["BootBackend", "EntryState", "Firmware", "SystemdBoot", "ThisBoot", "for_board"]


def for_board(board: Board, esp_dirs: tuple[Path, ...], firmware: Firmware | None = None
              ) -> BootBackend:
    """The boot backend of ``board``.

    Args:
        esp_dirs: where systemd-boot's UKIs are (``[ota] esp_dirs``).
        firmware: where the firmware's facts are read (default: the real places; tests
            point it at a fake tree).

    Raises:
        MemuError: the board's boot chain has no backend in this version.
    """
    if board.boot == "systemd-boot":
        return SystemdBoot(esp_dirs, firmware)
    raise MemuError(f"the {board.title} boots with {board.boot}, which this version of "
                    "Memu OS cannot drive yet", hint="install a release that supports it")
