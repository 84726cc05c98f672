"""The per-device setup token: proof that whoever sets the box up can see its screen.

Made on the box at first start (never at build time, so no two boxes share one), stored at
``<state_dir>/setup-token`` with mode 0600 in a 0700 directory, and reused on every later
start. It looks like ``k7m4-rq2x-hn9c``: 3 groups of 4 characters from an alphabet without
look-alikes (no 0/o, 1/l/i), about 59 bits of entropy, easy to type on a phone.
"""

from __future__ import annotations

import logging
import re
import secrets
import stat
from pathlib import Path

from memu_common.files import write_atomic

log = logging.getLogger(__name__)

TOKEN_FILE = "setup-token"
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
GROUPS = 3
GROUP_LEN = 4
_GROUP = f"[{ALPHABET}]{{{GROUP_LEN}}}"
TOKEN_RE = re.compile(rf"^{_GROUP}(-{_GROUP}){{{GROUPS - 1}}}$")


def generate_token() -> str:
    """A new random token, e.g. ``k7m4-rq2x-hn9c`` (from ``secrets``)."""
    return "-".join(
        "".join(secrets.choice(ALPHABET) for _ in range(GROUP_LEN)) for _ in range(GROUPS)
    )


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if missing, and make it mode 0700.

    Raises:
        OSError: it cannot be created or is not a directory.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode != 0o700:
        log.warning("%s had mode %04o; setting 0700", path, mode)
        path.chmod(0o700)


def _read_existing(path: Path) -> str | None:
    try:
        st = path.stat()
        token = path.read_text("ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        log.error("%s is unreadable (%s); making a new setup token", path, e)
        return None
    if not TOKEN_RE.match(token):
        log.error("%s does not hold a valid setup token; making a new one", path)
        return None
    if stat.S_IMODE(st.st_mode) != 0o600:
        log.warning("%s had mode %04o; setting 0600", path, stat.S_IMODE(st.st_mode))
        path.chmod(0o600)
    return token


def ensure_token(state_dir: Path) -> str:
    """Return this box's setup token, making and storing it on first use.

    Args:
        state_dir: the agent's state directory (created with mode 0700 if missing).

    Raises:
        OSError: the state directory or token file cannot be written.
    """
    ensure_private_dir(state_dir)
    path = state_dir / TOKEN_FILE
    for _ in range(3):
        token = _read_existing(path)
        if token is not None:
            return token
        if path.exists():  # present but invalid: replace it
            path.unlink()
        token = generate_token()
        if write_atomic(path, (token + "\n").encode("ascii"), exclusive=True):
            log.info("made a new setup token in %s", path)
            return token
    raise OSError(f"cannot settle the setup token in {path}")
