"""The per-device setup token: proof that whoever sets the box up can see its screen.

Made on the box at first start (never at build time, so no two boxes share one), stored at
``<state_dir>/setup-token`` with mode 0600 in a 0700 directory, and reused on every later
start. It looks like ``k7m4-rq2x-hn9c``: 3 groups of 4 characters from an alphabet without
look-alikes (no 0/o, 1/l/i), about 59 bits of entropy, easy to type on a phone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import stat
from pathlib import Path

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


def _write_new(path: Path, token: str) -> bool:
    """Write ``token`` to ``path`` atomically, only if ``path`` does not exist.

    The token goes to a fresh temporary file (O_CREAT|O_EXCL, 0600) which is then hard-linked
    to ``path``: the link fails if ``path`` exists, and ``path`` is never seen half-written.

    Returns:
        True when written, False when ``path`` already existed.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


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
        if _write_new(path, token):
            log.info("made a new setup token in %s", path)
            return token
    raise OSError(f"cannot settle the setup token in {path}")
