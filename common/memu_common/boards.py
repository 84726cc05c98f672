"""The boards Memu OS runs on, stated once: the build tools, the QEMU harness and the device
(its boot backend, :mod:`memu_ota.boot`) all read this table.

A board is an mkosi profile (``mkosi.conf.d/5x-board-<name>.conf``: packages, kernel, what
differs); its boot chain is a second profile named after :attr:`Board.boot` (the drop-ins and
overlays of that boot backend), which the build driver adds from this table. The image
names its board in ``/usr/lib/memu/board`` (``overlays/<board>/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from memu_common.errors import MemuError

#: Where an image names its board (one line, a key of :data:`BOARDS`).
BOARD_FILE = Path("/usr/lib/memu/board")

#: How a board boots and switches slots:
#: ``systemd-boot``: UEFI, unified kernel images with boot counting (N100);
#: ``tryboot``: the Raspberry Pi firmware's A/B boot partitions and one-shot tryboot flag.
BootBackendName = Literal["systemd-boot", "tryboot"]


@dataclass(frozen=True)
class Board:
    """One board.

    Attributes:
        name: the profile name (``MEMU_BOARD``), e.g. "n100".
        title: what a person calls it.
        arch: mkosi's architecture name (``Architecture=``, ``%a`` in output names):
            "x86-64" or "arm64".
        boot: its boot backend (:data:`BootBackendName`), also an mkosi profile.
    """

    name: str
    title: str
    arch: Literal["x86-64", "arm64"]
    boot: BootBackendName


BOARDS: dict[str, Board] = {b.name: b for b in (
    Board("n100", "Intel N100 mini PC", "x86-64", "systemd-boot"),
    Board("pi5", "Raspberry Pi 5", "arm64", "tryboot"),
)}
DEFAULT_BOARD = "n100"


def get(name: str) -> Board:
    """The board called ``name``.

    Raises:
        MemuError: no such board (the message lists the known ones).
    """
    try:
        return BOARDS[name]
    except KeyError:
        raise MemuError(f"unknown board {name!r}",
                        hint=f"use one of: {', '.join(sorted(BOARDS))}") from None


def running(board_file: Path = BOARD_FILE) -> Board:
    """The board this image was built for, from ``board_file``; :data:`DEFAULT_BOARD` when
    the file is absent (not a Memu OS image, e.g. a developer's machine running the tests).

    Raises:
        MemuError: the file names a board this code does not know.
    """
    try:
        name = board_file.read_text().strip()
    except FileNotFoundError:
        name = DEFAULT_BOARD
    return get(name)
