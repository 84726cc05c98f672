"""Logging to stderr, the way journald likes it.

Under systemd (``$JOURNAL_STREAM`` names our stderr) each line starts with a syslog
priority prefix such as ``<3>`` (sd-daemon(3)), so journald records the level and adds the
timestamp itself; elsewhere lines carry a timestamp and the level name.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message`` (sd-daemon(3) prefixes, no timestamp)."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record, prefixing every line with its syslog priority."""
        priority = _PRIORITY.get(record.levelno, 6)
        text = f"{record.name}: {super().format(record)}"
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def stderr_is_journal(env: Mapping[str, str]) -> bool:
    """True when ``$JOURNAL_STREAM`` (``DEV:INODE``) is our stderr (systemd.exec(5))."""
    value = env.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(debug: bool = False, env: Mapping[str, str] | None = None) -> None:
    """Send the root logger's records to stderr (INFO, or DEBUG when ``debug``)."""
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal(os.environ if env is None else env):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
