"""The console greeting: an agetty issue snippet that tells the person at the screen where
the first-boot page is and what the setup code is.

agetty shows ``/etc/issue`` plus every ``*.issue`` in ``/run/issue.d`` (and the other issue
directories, see agetty(8) "ISSUE FILES") above the login prompt, expanding escapes such as
``\\4`` (the IPv4 address of the interface with the default route). The file carries the
setup token, so it is mode 0600: agetty runs as root and can read it; other users cannot.
"""

from __future__ import annotations

import logging
from pathlib import Path

from memu_common import MemuError, run
from memu_common.files import write_atomic

log = logging.getLogger(__name__)

ISSUE_FILE = "50-memu.issue"
# The issue directories agetty reads at run time; only a snippet there is worth a reload.
AGETTY_ISSUE_DIRS = (Path("/run/issue.d"), Path("/etc/issue.d"))


def _plain(text: str) -> str:
    """Drop backslashes (agetty escapes) and control characters from ``text``."""
    return "".join(c for c in text if c != "\\" and c.isprintable())


def issue_text(device_name: str, token: str | None) -> str:
    """The snippet: page URLs and, while the box is not set up, the setup token.

    Args:
        device_name: shown in the heading.
        token: the setup token, or None once the box is set up.
    """
    name = _plain(device_name)
    if token is None:
        return f"Memu OS: {name} is set up.\n  Manage it at http://memu.local/ or http://\\4/\n\n"
    return (
        f"Memu OS: finish setting up {name}\n"
        "  On a phone or laptop on the same network, open\n"
        "    http://memu.local/   or   http://\\4/\n"
        f"  Setup code: {_plain(token)}\n"
        "\n"
    )


def write_issue(issue_dir: Path, text: str) -> Path:
    """Write ``text`` to ``<issue_dir>/50-memu.issue`` atomically, mode 0600.

    Returns:
        The file's path.

    Raises:
        OSError: the directory cannot be created or written.
    """
    path = issue_dir / ISSUE_FILE
    write_atomic(path, text.encode("utf-8"), mode=0o600, dir_mode=0o755)
    return path


def reload_agetty() -> None:
    """Ask running agettys to redraw their issue text (``agetty --reload``); failures are
    logged at debug level and ignored (no agetty, no console, or an old util-linux)."""
    try:
        proc = run(["agetty", "--reload"], check=False, timeout=10)
    except MemuError as e:
        log.debug("agetty --reload: %s", e)
        return
    if proc.returncode != 0:
        log.debug("agetty --reload exited %d: %s", proc.returncode, proc.stderr.strip())
