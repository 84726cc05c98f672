"""Whether this box has been set up: one marker file in the agent's state directory.

The first-boot apply writes ``<state_dir>/setup-done`` as its very last action, so the
marker's presence means "the family stack is configured"; a factory reset wipes the state
directory and the box is back to "pending". The marker is JSON
``{"at": <seconds since the epoch>, "admin": "@ada:memu.local"}``: the admin made at setup,
whose password the box can reset for someone at its screen (``memu_agent.recover_pages``).
"""

from __future__ import annotations

import enum
from pathlib import Path

from memu_common.files import read_json_object

#: The agent's state directory (its ``StateDirectory=memu``; ``memu_agent.config``).
STATE_DIR = Path("/var/lib/memu")
SETUP_DONE_MARKER = "setup-done"
#: The API token for scripts (``Authorization: Bearer``), made by setup (mode 0600).
API_TOKEN_FILE = "api-token"


class SetupState(enum.StrEnum):
    """The two states the box can be in, as shown by ``/api/status`` (``setup.state``)."""

    PENDING = "pending"
    DONE = "done"


def setup_state(state_dir: Path) -> SetupState:
    """Return DONE when ``<state_dir>/setup-done`` exists, PENDING otherwise (never raises)."""
    try:
        done = (state_dir / SETUP_DONE_MARKER).exists()
    except OSError:
        done = False
    return SetupState.DONE if done else SetupState.PENDING


def setup_admin(state_dir: Path) -> str | None:
    """The admin's Matrix user ID recorded at setup, or None (not set up, or an older
    marker without it)."""
    data = read_json_object(state_dir / SETUP_DONE_MARKER)
    admin = data.get("admin") if data else None
    return admin if isinstance(admin, str) and admin.startswith("@") else None
