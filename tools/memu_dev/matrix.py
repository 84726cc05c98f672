"""Creating Matrix users on a Synapse for tests: the shared-secret registration admin API.

Protocol (Synapse admin API, "Shared-Secret Registration"): ``GET
/_synapse/admin/v1/register`` returns a ``nonce``; ``POST`` the same path with the nonce,
``username``, ``password``, ``admin`` and ``mac`` (the box's own
:func:`memu_firstboot.provision.registration_mac`). Synchronous, for test code; the box
provisions with :class:`memu_firstboot.provision.Homeserver`.
"""

from __future__ import annotations

import json
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


def login(base_url: str, username: str, password: str, *, timeout: float = 30) -> str:
    """Log in with a password (``POST /_matrix/client/v3/login``, ``m.login.password``);
    return the new access token.

    Raises:
        urllib.error.HTTPError: wrong credentials (403) or the server refused.
    """
    body = {"type": "m.login.password", "password": password,
            "identifier": {"type": "m.id.user", "user": username}}
    req = urllib.request.Request(f"{base_url}/_matrix/client/v3/login",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return str(_json(req, timeout)["access_token"])
