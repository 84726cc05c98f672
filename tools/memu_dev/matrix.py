"""Creating Matrix users on a Synapse for tests: the shared-secret registration admin API.

Protocol (Synapse admin API, "Shared-Secret Registration"): ``GET
/_synapse/admin/v1/register`` returns a ``nonce``; ``POST`` the same path with the nonce,
``username``, ``password``, ``admin`` and ``mac`` (the box's own
:func:`memu_firstboot.provision.registration_mac`). Synchronous, for test code; the box
provisions with :class:`memu_firstboot.provision.Homeserver`.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from memu_firstboot.provision import registration_mac


@dataclass(frozen=True)
class Registered:
    """A user the homeserver created: its ID, an access token and that token's device."""

    user_id: str
    access_token: str
    device_id: str


def _json(req: urllib.request.Request | str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(req, timeout=timeout) as r:
        data: dict[str, Any] = json.load(r)
    return data


def register(base_url: str, secret: str, username: str, password: str, *,
             admin: bool = False, timeout: float = 30) -> Registered:
    """Create ``username`` on the homeserver at ``base_url`` (``http://host:port``).

    Raises:
        urllib.error.HTTPError: the homeserver refused (wrong secret: 403; taken name: 400).
    """
    path = f"{base_url}/_synapse/admin/v1/register"
    nonce = _json(path, timeout)["nonce"]
    body = {"nonce": nonce, "username": username, "password": password, "admin": admin,
            "mac": registration_mac(secret, nonce, username, password, admin)}
    req = urllib.request.Request(path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    data = _json(req, timeout)
    return Registered(data["user_id"], data["access_token"], data["device_id"])


def sign_in(base_url: str, username: str, password: str, *, timeout: float = 30
            ) -> Registered:
    """Log in with a password (``POST /_matrix/client/v3/login``, ``m.login.password``);
    return the new session.

    Raises:
        urllib.error.HTTPError: wrong credentials (403) or the server refused.
    """
    body = {"type": "m.login.password", "password": password,
            "identifier": {"type": "m.id.user", "user": username}}
    req = urllib.request.Request(f"{base_url}/_matrix/client/v3/login",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    data = _json(req, timeout)
    return Registered(data["user_id"], data["access_token"], data["device_id"])


def sign_out(base_url: str, access_token: str, *, timeout: float = 30) -> None:
    """End the session of ``access_token`` (``POST /_matrix/client/v3/logout``): the token
    is refused from then on (401 ``M_UNKNOWN_TOKEN``).

    Raises:
        urllib.error.HTTPError: the homeserver refused (an unknown token: 401).
    """
    req = urllib.request.Request(f"{base_url}/_matrix/client/v3/logout", data=b"{}",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {access_token}"})
    _json(req, timeout)


def login(base_url: str, username: str, password: str, *, timeout: float = 30) -> str:
    """:func:`sign_in`'s access token."""
    return sign_in(base_url, username, password, timeout=timeout).access_token


async def ask_in_room(base: str, user: Registered, alias: str, bot_id: str, text: str,
                      deadline_s: float = 60) -> str:
    """As a family member's app (matrix-nio) at ``base``: in the room ``alias`` (``user``
    is in it), once ``bot_id`` has joined it too, send ``text``; return the body of the
    bot's first reply to it (``m.relates_to.m.in_reply_to``).

    Raises:
        AssertionError: the bot did not join or did not reply within ``deadline_s``.
    """
    import nio  # the bot's extra; only these tests need it on the host

    client = nio.AsyncClient(base, user.user_id, device_id=user.device_id)
    client.access_token, client.user_id = user.access_token, user.user_id
    try:
        room = await client.room_resolve_alias(alias)
        assert isinstance(room, nio.RoomResolveAliasResponse), room
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            members = await client.joined_members(room.room_id)
            if isinstance(members, nio.JoinedMembersResponse) and bot_id in {
                    m.user_id for m in members.members}:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"{bot_id} did not join {alias} within {deadline_s} s")
        sent = await client.room_send(room.room_id, "m.room.message",
                                      {"msgtype": "m.text", "body": text})
        assert isinstance(sent, nio.RoomSendResponse), sent
        while time.monotonic() < end:
            msgs = await client.room_messages(room.room_id, limit=20)
            assert isinstance(msgs, nio.RoomMessagesResponse), msgs
            for ev in msgs.chunk:
                src = ev.source
                if src.get("sender") == bot_id and src.get("type") == "m.room.message" and \
                        src["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get(
                            "event_id") == sent.event_id:
                    return str(src["content"]["body"])
            await asyncio.sleep(0.5)
        raise AssertionError(f"no reply to {text!r} from {bot_id} within {deadline_s} s")
    finally:
        await client.close()
