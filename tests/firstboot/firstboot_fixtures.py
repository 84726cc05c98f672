"""Shared by the apply's step tests: executable stand-ins for the box's commands
(timedatectl, hostnamectl, ``systemctl reload``, pyinfra)."""

from __future__ import annotations

import stat
from pathlib import Path


def script(path: Path, text: str) -> tuple[str, ...]:
    """Write ``text`` (with its ``#!`` line) to ``path``, make it executable; its argv."""
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return (str(path),)


def recorder(path: Path, log: Path, status: int) -> tuple[str, ...]:
    """A command that appends its arguments (one line) to ``log`` and exits ``status``."""
    return script(path, f'#!/bin/sh\necho "$@" >> "{log}"\nexit {status}\n')
