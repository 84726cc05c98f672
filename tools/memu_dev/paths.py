"""Where things are in the repository, and how to call the pinned mkosi."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from memu_common import MemuError, boards, osrelease

REPO = Path(__file__).resolve().parents[2]
MKOSI_PYTHONPATH = REPO / ".tools/mkosi/usr/lib/python3/dist-packages"
OUTPUT = REPO / "mkosi.output"
#: The hash-pinned wheels the OS itself installs (pyinfra); a BuildSources= of the image.
OS_WHEELS_DIR = REPO / "mkosi.cache/wheels/os"
#: The board built and booted unless told (``MEMU_BOARD``); the boards are in
#: :data:`memu_common.boards.BOARDS`.
DEFAULT_BOARD = os.environ.get("MEMU_BOARD", boards.DEFAULT_BOARD)


def version() -> str:
    """The OS version, from the one place it is kept (``mkosi.version``)."""
    return (REPO / "mkosi.version").read_text().strip()


def source_date_epoch() -> int:
    """The time every file of a build carries (``SourceDateEpoch=`` in ``mkosi.conf``, in
    seconds since the epoch), for what the build makes outside mkosi."""
    for line in (REPO / "mkosi.conf").read_text().splitlines():
        if line.startswith("SourceDateEpoch="):
            return int(line.partition("=")[2])
    raise MemuError("mkosi.conf has no SourceDateEpoch=")


def image_path(board: str = DEFAULT_BOARD, ver: str | None = None,
               variant: str | None = None) -> Path:
    """The raw disk image a build of ``board`` produces: ``memu-os_<version>_<arch>.raw``,
    or ``memu-os-<variant>_…`` for a variant's (a profile with its own Output=: "bare",
    "hailo")."""
    stem = osrelease.artifact_stem(ver or version(), boards.get(board).arch, variant)
    return OUTPUT / f"{stem}.raw"


def mkosi_cmd() -> list[str]:
    """argv prefix that runs the pinned mkosi (fetched by tools/setup-mkosi.sh).

    Also makes sure :data:`OS_WHEELS_DIR` exists: mkosi refuses to parse a configuration
    whose BuildSources= are missing, even for ``mkosi sandbox``, and on a fresh clone the
    tools tree is made before the build fetches the wheels.
    """
    OS_WHEELS_DIR.mkdir(parents=True, exist_ok=True)
    return ["env", f"PYTHONPATH={MKOSI_PYTHONPATH}", "/usr/bin/python3", "-m", "mkosi"]


def python() -> str:
    """The interpreter running us (the project venv)."""
    return sys.executable
