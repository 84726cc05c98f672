"""Memu's family assistant: a Matrix bot with household memory, recall, lists and reminders."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("memu-os")
except PackageNotFoundError:  # running from a source tree without the wheel installed
    __version__ = "0+unknown"
