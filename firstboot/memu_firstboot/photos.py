"""Photos' (Immich's) administrator: made by the box, never by whoever comes first.

Immich's first account is its administrator, made by anyone who sends
``POST /api/auth/admin-sign-up`` ``{"email", "name", "password"}`` while
``GET /api/server/config`` says ``"isInitialized": false`` (Immich's server API,
immich-app/immich ``server/src/controllers/auth.controller.ts``; a second sign-up gets 400
"The server already has an admin"). On a family's box the first comer could be anyone on
the Wi-Fi, so the stack's nginx refuses that route on the photos port
(``proxy/photos.conf``), and the box makes the administrator itself, as the family's admin
with the admin's password, at the two moments it holds that password:

* the first-boot apply (its ``photos`` step), when Immich runs by then;
* the admin's next sign-in to ``/admin`` otherwise (Immich's images usually arrive after
  setup: they are downloaded once the box is online).

The box reaches Immich on loopback (:data:`IMMICH_URL`, published by compose.yaml), past
nginx. Once made, ``<state_dir>/photos-admin.json`` ``{"email": …, "at": <epoch s>}``
records it, so later sign-ins do not ask again and the admin page can say which email signs
in to photos.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from memu_common import MemuError
from memu_common.files import read_json_object, write_json_atomic

#: Immich's server, published on the box's loopback only (compose.yaml, MEMU_IMMICH_BIND).
IMMICH_URL = "http://127.0.0.1:2284"
RECORD_FILE = "photos-admin.json"
#: Immich's answer when its administrator exists already.
ALREADY = "The server already has an admin"


class Photos(enum.StrEnum):
    """What became of the administrator."""

    MADE = "made"
    MINE = "made earlier"
    TAKEN = "taken"
    NOT_RUNNING = "not running"
    STARTING = "starting"


@dataclass(frozen=True)
class Verdict:
    """The outcome and the sentence for the progress page or the log."""

    state: Photos
    message: str


def photos_email(user_id: str) -> str:
    """The email Immich signs the admin in with: the Matrix user ID ``@ada:memu.local`` as
    ``ada@memu.local`` (Immich wants an email's shape; nothing is ever mailed)."""
    local, _, server = user_id.removeprefix("@").partition(":")
    return f"{local}@{server}"


def recorded(state_dir: Path) -> str | None:
    """The email of the administrator the box made, or None."""
    data = read_json_object(state_dir / RECORD_FILE)
    email = data.get("email") if data else None
    return email if isinstance(email, str) else None


def record(state_dir: Path, email: str) -> None:
    """Record that Immich's administrator exists as ``email``.

    Raises:
        OSError: it cannot be written.
    """
    write_json_atomic(state_dir / RECORD_FILE, {"email": email, "at": time.time()},
                      mode=0o644)


async def make_admin(session: aiohttp.ClientSession, url: str, email: str, name: str,
                     password: str, *, timeout_s: float = 10.0) -> Verdict:
    """Make Immich's administrator at ``url`` unless it has one (one look, no waiting).

    Returns:
        MADE; MINE (there is one and ``email`` with ``password`` signs in: the box made it
        earlier); TAKEN (there is one the box did not make); NOT_RUNNING (nothing listens:
        Immich is not on the box yet); STARTING (something listens, Immich does not
        answer yet).

    Raises:
        MemuError: Immich refused the account for another reason (its message is said).
    """
    base = url.rstrip("/")
    limit = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.get(f"{base}/api/server/config", timeout=limit) as r:
            if r.status != 200:
                return Verdict(Photos.STARTING, f"photos answered {r.status}; starting")
            config = await r.json()
        if not config.get("isInitialized"):
            async with session.post(f"{base}/api/auth/admin-sign-up", timeout=limit, json={
                    "email": email, "name": name, "password": password}) as r:
                if r.status in (200, 201):
                    return Verdict(Photos.MADE, f"photos' administrator is {email}, with "
                                                "the admin's password")
                body = await r.json(content_type=None)
            said = body.get("message") if isinstance(body, dict) else None
            said = "; ".join(map(str, said)) if isinstance(said, list) else str(said)
            if ALREADY not in said:
                raise MemuError(f"photos refused their administrator {email}: {said}",
                                hint="sign in to the box's admin page later to try again")
        return await _already(session, base, email, password, limit)
    except aiohttp.ClientConnectorError:
        return Verdict(Photos.NOT_RUNNING, "photos are not on the box yet")
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        return Verdict(Photos.STARTING, f"photos do not answer yet ({e or type(e).__name__})")


async def _already(session: aiohttp.ClientSession, base: str, email: str, password: str,
                   limit: aiohttp.ClientTimeout) -> Verdict:
    """MINE when ``email`` and ``password`` sign in to Immich (``POST /api/auth/login``; the
    session made for the check is ended again), TAKEN otherwise."""
    async with session.post(f"{base}/api/auth/login", timeout=limit,
                            json={"email": email, "password": password}) as r:
        if r.status not in (200, 201):
            return Verdict(Photos.TAKEN, (
                "photos already have an administrator that the box did not make (someone "
                "signed up in photos first)"))
        token = (await r.json()).get("accessToken", "")
    async with session.post(f"{base}/api/auth/logout", timeout=limit,
                            headers={"Authorization": f"Bearer {token}"}):
        pass
    return Verdict(Photos.MINE, f"photos' administrator is {email}, with the admin's "
                                "password")


async def ensure_admin(session: aiohttp.ClientSession, url: str, state_dir: Path,
                       user_id: str, password: str, wait_s: float = 0.0) -> Verdict:
    """Photos' administrator as the admin ``user_id`` (``@ada:memu.local``: email
    :func:`photos_email`, name its local part) with ``password``, waiting up to ``wait_s``
    seconds for a starting Immich (:func:`wait_and_make_admin`); recorded in ``state_dir``
    when it is the box's own (MADE or MINE).

    Raises:
        MemuError: as :func:`make_admin`.
        OSError: the record cannot be written.
    """
    email = photos_email(user_id)
    name = user_id.removeprefix("@").partition(":")[0]
    verdict = await wait_and_make_admin(session, url, email, name, password, wait_s)
    if verdict.state in (Photos.MADE, Photos.MINE):
        record(state_dir, email)
    return verdict


async def wait_and_make_admin(session: aiohttp.ClientSession, url: str, email: str,
                              name: str, password: str, wait_s: float,
                              every_s: float = 2.0) -> Verdict:
    """:func:`make_admin`, asked again each ``every_s`` seconds for up to ``wait_s`` seconds
    while Immich is STARTING (it migrates its database on a first start); NOT_RUNNING is
    said at once.

    Raises:
        MemuError: as :func:`make_admin`.
    """
    deadline = time.monotonic() + wait_s
    while True:
        verdict = await make_admin(session, url, email, name, password)
        if verdict.state is not Photos.STARTING or time.monotonic() >= deadline:
            return verdict
        await asyncio.sleep(every_s)
