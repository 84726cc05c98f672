"""Where things are in the repository, and how to call the pinned mkosi."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MKOSI_PYTHONPATH = REPO / ".tools/mkosi/usr/lib/python3/dist-packages"
OUTPUT = REPO / "mkosi.output"
DEFAULT_BOARD = os.environ.get("MEMU_BOARD", "n100")

#: Board name -> mkosi architecture name (as in the output file name, %a).
BOARD_ARCH = {"n100": "x86-64", "pi5": "arm64"}


def version() -> str:
    """The OS version, from the one place it is kept (``mkosi.version``)."""
    return (REPO / "mkosi.version").read_text().strip()


def image_path(board: str = DEFAULT_BOARD, ver: str | None = None) -> Path:
    """The raw disk image a build of ``board`` produces: ``memu-os_<version>_<arch>.raw``."""
    return OUTPUT / f"memu-os_{ver or version()}_{BOARD_ARCH[board]}.raw"


def mkosi_cmd() -> list[str]:
    """argv prefix that runs the pinned mkosi (fetched by tools/setup-mkosi.sh)."""
    return ["env", f"PYTHONPATH={MKOSI_PYTHONPATH}", "/usr/bin/python3", "-m", "mkosi"]


def python() -> str:
    """The interpreter running us (the project venv)."""
    return sys.executable
