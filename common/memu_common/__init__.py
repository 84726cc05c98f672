"""Pieces shared by every Memu OS package: one way to fail, one way to run a command."""

from memu_common.errors import MemuError
from memu_common.run import run

__all__ = ["MemuError", "run"]
