"""Browser sessions: the claim session (before setup) and admin sessions (after setup).

A session is a random 256-bit token in the ``memu_session`` cookie (HttpOnly,
SameSite=Strict; ``Secure`` when the page came over HTTPS). Only its SHA-256 is kept.

- The **claim session** is what the setup code buys (``POST /api/claim``). There is one at a
  time: a new claim with the code replaces it, so a dead phone cannot lock the family out.
  Its hash is stored atomically in ``<state_dir>/claim.json``, so it survives a power cut
  or an agent restart; it stops counting once setup is done.
- **Admin sessions** are kept in memory (a restart of the agent signs the admin out), at most
  ``max_admin`` of them, each valid for ``admin_ttl_s`` seconds after its last use.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from memu_common.files import read_json_object, write_json_atomic

log = logging.getLogger(__name__)

COOKIE = "memu_session"
CLAIM_FILE = "claim.json"


class SessionKind(enum.StrEnum):
    """What a session was made for."""

    CLAIM = "claim"
    ADMIN = "admin"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class Sessions:
    """The box's sessions.

    Args:
        state_dir: the agent's state directory (holds ``claim.json``).
        admin_ttl_s: seconds an admin session lives after its last use.
        max_admin: admin sessions kept at most (the oldest is dropped first).
        clock: seconds (tests pass a fake).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        admin_ttl_s: float = 12 * 3600,
        max_admin: int = 32,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._claim_file = state_dir / CLAIM_FILE
        self._ttl, self._max_admin, self._clock = admin_ttl_s, max_admin, clock
        self._admin: OrderedDict[str, float] = OrderedDict()  # digest -> expiry

    def claimed(self) -> bool:
        """True once a claim has been made on this box (since the last factory reset)."""
        return self._claim_digest() is not None

    def _claim_digest(self) -> str | None:
        data = read_json_object(self._claim_file)
        digest = data.get("session_sha256") if data else None
        return digest if isinstance(digest, str) else None

    def new_claim(self) -> str:
        """Make the claim session, replacing any earlier one; returns its token.

        Raises:
            OSError: the claim cannot be stored (the caller must not hand out the token).
        """
        token = secrets.token_urlsafe(32)
        write_json_atomic(self._claim_file,
                          {"session_sha256": _digest(token), "at": int(self._clock())})
        return token

    def new_admin(self) -> str:
        """Make an admin session; returns its token."""
        token = secrets.token_urlsafe(32)
        self._admin[_digest(token)] = self._clock() + self._ttl
        while len(self._admin) > self._max_admin:
            self._admin.popitem(last=False)
        return token

    def kind_of(self, token: str) -> SessionKind | None:
        """Which live session ``token`` is, or None (unknown or expired). Compares in
        constant time; using an admin session extends it."""
        digest = _digest(token)
        claim = self._claim_digest()
        if claim is not None and hmac.compare_digest(claim, digest):
            return SessionKind.CLAIM
        expiry = self._admin.get(digest)
        if expiry is None:
            return None
        now = self._clock()
        if now >= expiry:
            del self._admin[digest]
            return None
        self._admin[digest] = now + self._ttl
        self._admin.move_to_end(digest)
        return SessionKind.ADMIN

    def end(self, token: str) -> None:
        """End the admin session ``token`` (sign out); unknown tokens are ignored."""
        self._admin.pop(_digest(token), None)
