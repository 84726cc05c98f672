"""Provisioning chat through Synapse's APIs (never ``docker exec``): at setup, the admin's
and the assistant's accounts and the family room with the assistant in it; later, from the
admin's page, the family's accounts (:meth:`Homeserver.members` and the methods after it).

Every step is idempotent, so the setup's Retry (and a run after a power cut) completes what
is missing and makes nothing twice: an account that exists is logged in to instead (with
the password the setup holds; another password is a plain error), the family room is found
by its alias before one is made, and joining a room twice is a no-op in Matrix.

APIs (Matrix client-server spec v1.x, https://spec.matrix.org/latest/client-server-api/, and
Synapse's admin API docs):
    ``GET``/``POST /_synapse/admin/v1/register``: shared-secret registration. ``GET`` gives a
        ``nonce``; ``POST`` ``{nonce, username, password, admin, mac}`` with ``mac`` the hex
        HMAC-SHA1, keyed with ``registration_shared_secret``, of ``nonce NUL username NUL
        password NUL "admin"|"notadmin"``. Taken name: 400 ``M_USER_IN_USE``.
    ``POST /_matrix/client/v3/login`` (``m.login.password``), ``GET …/account/whoami``,
    ``GET …/directory/room/{alias}`` (404 ``M_NOT_FOUND``), ``POST …/createRoom``
        (``room_alias_name`` taken: 400 ``M_ROOM_IN_USE``), ``POST …/join/{room}``,
        ``POST …/logout``, ``GET …/devices``, ``POST …/delete_devices`` (user-interactive
        auth with the password).
    Synapse's admin API (https://element-hq.github.io/synapse/latest/usage/administration/
    admin_api/): ``GET /_synapse/admin/v1/users/<id>/admin`` (403 for a non-admin caller),
    ``GET /_synapse/admin/v2/users`` (list) and ``/v2/users/<id>`` (``PUT`` creates),
    ``POST /_synapse/admin/v1/reset_password/<id>``, ``POST …/v1/deactivate/<id>``,
    ``POST …/v1/join/<room>`` (puts a local user in a room the caller is in).
A forgotten admin password (:meth:`Homeserver.recover_password`) is reset with a throw-away
admin account made with the registration shared secret, deactivated right after.
Only the box's inside reaches the admin API (``http://127.0.0.1:8008``; nginx blocks it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from memu_common import MemuError

#: The family room's alias: ``#family:<server name>``.
FAMILY_ALIAS = "family"
#: Seconds for one API call (Synapse under load on a small box answers within a few).
CALL_TIMEOUT_S = 60.0
#: Synapse's client and admin APIs from the box's inside (compose.yaml publishes it on
#: loopback only; nginx does not pass the admin API).
SYNAPSE_URL = "http://127.0.0.1:8008"


def localpart(user_id: str) -> str:
    """A Matrix user ID's name: ``@ada:memu.local`` → ``ada`` (Matrix specification,
    "Appendices: User Identifiers")."""
    return user_id[1:].split(":", 1)[0]


def server_of(user_id: str) -> str:
    """A Matrix user ID's server name: ``@ada:memu.local`` → ``memu.local``."""
    return user_id.split(":", 1)[1]


class MatrixError(MemuError):
    """The homeserver answered with an error (``status``, Matrix ``errcode``), or did not
    answer at all (``status`` 0)."""

    def __init__(self, message: str, *, status: int = 0, errcode: str = "",
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.errcode = errcode


@dataclass(frozen=True)
class Member:
    """A family member's chat account: ``@name:server``, the name shown in chat, whether it
    is a server admin."""

    user_id: str
    display_name: str
    admin: bool


@dataclass(frozen=True)
class Account:
    """A Matrix account with a session: ``@name:server``, its access token (never in
    ``repr``) and that token's device."""

    user_id: str
    access_token: str = field(repr=False)
    device_id: str


def registration_mac(secret: str, nonce: str, username: str, password: str,
                     admin: bool) -> str:
    """The hex HMAC-SHA1 that shared-secret registration expects (see the module doc)."""
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update("\x00".join((nonce, username, password,
                            "admin" if admin else "notadmin")).encode())
    return mac.hexdigest()


class Homeserver:
    """Synapse's client and admin APIs at ``base_url`` (the box's inside), over ``session``.

    Every method raises :class:`MatrixError` when the homeserver refuses or cannot be
    reached; messages say what failed in words, never a password or token.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
                    token: str | None = None, what: str = "") -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with self._session.request(
                    method, self._base + path, json=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)) as r:
                data = await r.json(content_type=None)
                status = r.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise MatrixError(f"the chat server did not answer ({what or path}): {e}",
                              hint="it may still be starting; try again in a minute") from e
        if status >= 400 or not isinstance(data, dict):
            data = data if isinstance(data, dict) else {}
            raise MatrixError(f"the chat server refused {what or path}: "
                              f"{data.get('error', status)}",
                              status=status, errcode=str(data.get("errcode", "")))
        return data

    async def register(self, secret: str, username: str, password: str, *,
                       admin: bool = False) -> Account:
        """Create ``username`` with the shared secret (``M_USER_IN_USE`` if it exists)."""
        path = "/_synapse/admin/v1/register"
        nonce = (await self._call("GET", path, what="a registration nonce"))["nonce"]
        body = {"nonce": nonce, "username": username, "password": password, "admin": admin,
                "mac": registration_mac(secret, str(nonce), username, password, admin)}
        data = await self._call("POST", path, body, what=f"making the account {username!r}")
        return Account(data["user_id"], data["access_token"], data["device_id"])

    async def login(self, username: str, password: str, *,
                    device_name: str = "Memu setup") -> Account:
        """A new session for ``username`` (403 ``M_FORBIDDEN``: wrong password)."""
        body = {"type": "m.login.password", "password": password,
                "identifier": {"type": "m.id.user", "user": username},
                "initial_device_display_name": device_name}
        data = await self._call("POST", "/_matrix/client/v3/login", body,
                                what=f"signing in as {username!r}")
        return Account(data["user_id"], data["access_token"], data["device_id"])

    async def is_admin(self, account: Account) -> bool:
        """Whether ``account`` is a server admin: Synapse's "Query server admin status"
        (``GET /_synapse/admin/v1/users/<user_id>/admin``), which only an admin may call,
        so a refusal (403) means no."""
        path = f"/_synapse/admin/v1/users/{urllib.parse.quote(account.user_id, safe='')}/admin"
        try:
            data = await self._call("GET", path, token=account.access_token,
                                    what="checking the account's rights")
        except MatrixError as e:
            if e.status == 403:
                return False
            raise
        return data.get("admin") is True

    async def logout(self, account: Account) -> None:
        """End ``account``'s session (``POST /_matrix/client/v3/logout``): its device goes
        from the user's device list."""
        await self._call("POST", "/_matrix/client/v3/logout", {}, token=account.access_token,
                         what="signing out")

    async def whoami(self, token: str) -> str | None:
        """The user ID ``token`` belongs to, or None when the token is not (or no longer)
        valid (401 ``M_UNKNOWN_TOKEN``)."""
        try:
            data = await self._call("GET", "/_matrix/client/v3/account/whoami", token=token,
                                    what="checking a session")
        except MatrixError as e:
            if e.status == 401:
                return None
            raise
        return str(data["user_id"])

    async def ensure_account(self, secret: str, username: str, password: str, *,
                             admin: bool = False) -> Account:
        """The account ``username`` with ``password``: registered now, or, when it already
        exists (an earlier run), signed in to.

        Raises:
            MatrixError: it exists with another password (a plain message says so), or
                the homeserver refused or did not answer.
        """
        try:
            return await self.register(secret, username, password, admin=admin)
        except MatrixError as e:
            if e.errcode != "M_USER_IN_USE":
                raise
        try:
            return await self.login(username, password)
        except MatrixError as e:
            if e.status == 403:
                raise MatrixError(
                    f"a chat account named {username!r} already exists with another password",
                    status=403, errcode=e.errcode,
                    hint="choose another user name, or use that account's password") from e
            raise

    async def room_by_alias(self, alias: str) -> str | None:
        """The room ID of ``#alias:server`` (full alias), or None when there is none."""
        quoted = urllib.parse.quote(alias, safe="")
        try:
            data = await self._call("GET", f"/_matrix/client/v3/directory/room/{quoted}",
                                    what=f"looking up {alias}")
        except MatrixError as e:
            if e.status == 404:
                return None
            raise
        return str(data["room_id"])

    async def ensure_family_room(self, owner: Account, server_name: str, name: str,
                                 invite: tuple[str, ...]) -> str:
        """The family room (``#family:<server_name>``), made by ``owner`` if missing: private
        (invite only), named ``name``, with ``invite`` invited. Not end-to-end encrypted: the
        assistant reads the room to answer, and the messages never leave the box.

        Returns:
            The room ID.
        """
        alias = f"#{FAMILY_ALIAS}:{server_name}"
        if room := await self.room_by_alias(alias):
            return room
        body = {"preset": "private_chat", "name": name, "room_alias_name": FAMILY_ALIAS,
                "topic": "Our family's room. Ask the assistant: type /help",
                "invite": list(invite)}
        try:
            data = await self._call("POST", "/_matrix/client/v3/createRoom", body,
                                    token=owner.access_token, what="making the family room")
        except MatrixError as e:
            if e.errcode == "M_ROOM_IN_USE" and (room := await self.room_by_alias(alias)):
                return room  # made meanwhile by an earlier, interrupted run
            raise
        return str(data["room_id"])

    async def join(self, account: Account, room: str) -> None:
        """``account`` joins ``room`` (an ID or alias; it must be invited to a private room).
        Joining a room it is in already changes nothing."""
        quoted = urllib.parse.quote(room, safe="")
        await self._call("POST", f"/_matrix/client/v3/join/{quoted}", {},
                         token=account.access_token, what="joining the family room")

    async def drop_devices(self, account: Account, password: str, display_name: str) -> int:
        """End ``account``'s other sessions whose device is called ``display_name`` (what an
        earlier sign-in of the same kind left behind after a crash); deleting devices needs
        the password again (user-interactive auth, ``m.login.password``). Returns how many.
        """
        data = await self._call("GET", "/_matrix/client/v3/devices",
                                token=account.access_token, what="listing sessions")
        stale = [str(d["device_id"]) for d in data.get("devices", [])
                 if d.get("display_name") == display_name
                 and d.get("device_id") != account.device_id]
        if stale:
            auth = {"type": "m.login.password", "password": password,
                    "identifier": {"type": "m.id.user", "user": account.user_id}}
            await self._call("POST", "/_matrix/client/v3/delete_devices",
                             {"devices": stale, "auth": auth}, token=account.access_token,
                             what="ending old sessions")
        return len(stale)

    async def members(self, admin: Account) -> list[Member]:
        """The server's active accounts (no guests, none deactivated), by user ID."""
        data = await self._call("GET", "/_synapse/admin/v2/users?guests=false&limit=500",
                                token=admin.access_token, what="listing the accounts")
        found = [Member(str(u["name"]), str(u.get("displayname") or ""), bool(u.get("admin")))
                 for u in data.get("users", []) if not u.get("deactivated")]
        return sorted(found, key=lambda m: m.user_id)

    async def add_member(self, admin: Account, user_id: str, display_name: str,
                         password: str) -> None:
        """Make the account ``user_id`` (not an admin) with ``password``.

        Raises:
            MatrixError: the name is taken (``errcode`` ``M_USER_IN_USE``), or the server
                refused.
        """
        path = f"/_synapse/admin/v2/users/{urllib.parse.quote(user_id, safe='')}"
        try:
            await self._call("GET", path, token=admin.access_token, what="checking the name")
        except MatrixError as e:
            if e.status != 404:
                raise
        else:  # PUT would change the existing account: refuse instead
            raise MatrixError(f"{user_id} already exists", status=400,
                              errcode="M_USER_IN_USE", hint="choose another user name")
        await self._call("PUT", path, {"password": password, "displayname": display_name,
                                       "admin": False, "logout_devices": False},
                         token=admin.access_token, what=f"making {user_id}")

    async def set_password(self, admin: Account, user_id: str, password: str) -> None:
        """Give ``user_id`` a new password and end its sessions."""
        path = f"/_synapse/admin/v1/reset_password/{urllib.parse.quote(user_id, safe='')}"
        await self._call("POST", path, {"new_password": password, "logout_devices": True},
                         token=admin.access_token, what=f"resetting {user_id}'s password")

    async def remove_member(self, admin: Account, user_id: str) -> None:
        """Deactivate ``user_id`` (it can no longer sign in; its messages stay)."""
        path = f"/_synapse/admin/v1/deactivate/{urllib.parse.quote(user_id, safe='')}"
        await self._call("POST", path, {"erase": False}, token=admin.access_token,
                         what=f"removing {user_id}")

    async def put_in_room(self, admin: Account, room: str, user_id: str) -> None:
        """Make ``user_id`` a member of ``room`` (an ID or alias the admin is in)."""
        path = f"/_synapse/admin/v1/join/{urllib.parse.quote(room, safe='')}"
        await self._call("POST", path, {"user_id": user_id}, token=admin.access_token,
                         what=f"adding {user_id} to the family room")

    async def recover_password(self, secret: str, user_id: str, password: str) -> None:
        """Give ``user_id`` (the admin, who forgot the password) a new ``password`` without
        any admin signed in: a throw-away admin account made with the registration shared
        ``secret`` resets it (ending ``user_id``'s sessions) and is deactivated again.

        Raises:
            MatrixError: a step was refused or the server did not answer (the throw-away
                account is deactivated whenever it was made).
        """
        helper = await self.register(secret, f"memu-recovery-{secrets.token_hex(4)}",
                                     secrets.token_urlsafe(24), admin=True)
        try:
            await self.set_password(helper, user_id, password)
        finally:
            await self.remove_member(helper, helper.user_id)
