"""The bot's side of the Matrix client-server API, on top of matrix-nio's ``AsyncClient``.

Everything the rest of the bot needs from the homeserver goes through ``Matrix``: sending
notices (with a caller-chosen transaction id, so retries are idempotent), uploading a file,
joining/leaving, and the room-history search that nio has no method for
(``POST /_matrix/client/v3/search``, spec section "Server Side Search"), which is sent
through the nio client's own aiohttp session and access token.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import nio

from memu_intelligence.config import Config

log = logging.getLogger(__name__)


class MatrixError(Exception):
    """The homeserver refused or failed a request; ``str()`` says which and why."""


@dataclass(frozen=True)
class HistoryHit:
    """A chat message found by server-side search."""

    event_id: str
    sender: str
    body: str
    ts: dt.datetime
    rank: float


class Matrix:
    """A thin, typed wrapper over ``nio.AsyncClient`` for one bot account (token login)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.client = nio.AsyncClient(
            cfg.homeserver, cfg.user_id, device_id=cfg.device_id or None, store_path=None
        )
        self.client.access_token = cfg.access_token
        self.client.user_id = cfg.user_id
        if cfg.device_id:
            self.client.device_id = cfg.device_id

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.client.close()

    async def send_notice(
        self,
        room_id: str,
        text: str,
        *,
        reply_to: str | None = None,
        txn_id: str | None = None,
    ) -> str:
        """Send an ``m.notice`` (bots use notices so other bots don't answer them).

        ``txn_id`` makes the send idempotent (spec: "Transaction identifiers"); defaults to a
        random one. Returns the event id.

        Raises:
            MatrixError: the homeserver refused the event.
        """
        content: dict[str, Any] = {"msgtype": "m.notice", "body": text}
        if reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        resp = await self.client.room_send(
            room_id, "m.room.message", content, tx_id=txn_id or uuid.uuid4().hex,
            ignore_unverified_devices=True,
        )
        if isinstance(resp, nio.RoomSendError):
            raise MatrixError(f"send to {room_id} failed: {resp.status_code} {resp.message}")
        return str(resp.event_id)

    async def send_file(self, room_id: str, name: str, data: bytes, mimetype: str) -> str:
        """Upload ``data`` to the media repository and post it as an ``m.file`` message.

        Raises:
            MatrixError: the upload or the send failed.
        """
        resp, _ = await self.client.upload(
            lambda *_: data, content_type=mimetype, filename=name, filesize=len(data)
        )
        if not isinstance(resp, nio.UploadResponse):
            raise MatrixError(f"upload failed: {getattr(resp, 'message', resp)}")
        content = {
            "msgtype": "m.file",
            "body": name,
            "filename": name,
            "url": resp.content_uri,
            "info": {"mimetype": mimetype, "size": len(data)},
        }
        sent = await self.client.room_send(room_id, "m.room.message", content)
        if isinstance(sent, nio.RoomSendError):
            raise MatrixError(f"send to {room_id} failed: {sent.message}")
        return str(sent.event_id)

    async def join(self, room_id: str) -> bool:
        """Join (accept an invite); False when the homeserver refused."""
        resp = await self.client.join(room_id)
        if isinstance(resp, nio.JoinError):
            log.warning("join %s failed: %s", room_id, resp.message)
            return False
        return True

    async def leave(self, room_id: str) -> None:
        """Leave a room, or reject an invite (the same request in Matrix)."""
        resp = await self.client.room_leave(room_id)
        if isinstance(resp, nio.RoomLeaveError):
            log.warning("leave %s failed: %s", room_id, resp.message)

    async def search_history(
        self, room_id: str, term: str, *, limit: int = 5, deadline: float = 5.0
    ) -> list[HistoryHit]:
        """Messages in ``room_id`` matching ``term`` by the homeserver's full-text search,
        best first, without the bot's own.

        Request body (spec 11.14 "Server Side Search"): ``search_categories.room_events``
        with ``keys: ["content.body"]``, ``filter.rooms = [room_id]``, ``filter.not_senders
        = [the bot]`` (its answers repeat the facts they cite, and would fill the window),
        ``order_by: "rank"``. Synapse ranks up to 500 matches, then applies the filter and
        ``limit`` (synapse/handlers/search.py); rank order has no next page.

        Raises:
            MatrixError: the homeserver answered with an error or not in time.
        """
        body = {
            "search_categories": {
                "room_events": {
                    "search_term": term,
                    "keys": ["content.body"],
                    "filter": {"rooms": [room_id], "limit": limit,
                               "types": ["m.room.message"], "not_senders": [self.cfg.user_id]},
                    "order_by": "rank",
                }
            }
        }
        path = "/_matrix/client/v3/search"
        headers = {"Authorization": f"Bearer {self.cfg.access_token}",
                   "Content-Type": "application/json"}
        try:
            resp = await self.client.send("POST", path, json.dumps(body), headers,
                                          timeout=deadline)
            async with resp:
                data = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise MatrixError(f"search failed: {e or type(e).__name__}") from e
        if status != 200:
            raise MatrixError(f"search failed: {status} {data.get('error', '')}")
        results = data.get("search_categories", {}).get("room_events", {}).get("results", [])
        hits = []
        for r in results:
            ev = r.get("result", {})
            msg_body = ev.get("content", {}).get("body")
            if not isinstance(msg_body, str):
                continue
            hits.append(HistoryHit(
                event_id=ev.get("event_id", ""),
                sender=ev.get("sender", ""),
                body=msg_body,
                ts=dt.datetime.fromtimestamp(ev.get("origin_server_ts", 0) / 1000, dt.UTC),
                rank=float(r.get("rank", 0.0)),
            ))
        return hits

    async def missed(self, room_id: str, start: str, end: str, *, most: int = 2000
                     ) -> list[Any]:
        """The room's events between sync tokens ``end`` (older) and ``start`` (newer),
        oldest first, at most ``most``: what a sync left out when its timeline was
        ``limited`` (``start`` is the timeline's ``prev_batch``, ``end`` the token of the
        sync before). ``GET /rooms/{id}/messages?dir=b&from=…&to=…`` (spec "Syncing",
        "Getting events for a room"), page by page.

        Raises:
            MatrixError: the homeserver refused a page.
        """
        found: list[Any] = []
        token: str | None = start
        while token and len(found) < most:
            resp = await self.client.room_messages(room_id, start=token, end=end,
                                                   direction=nio.MessageDirection.back,
                                                   limit=min(100, most - len(found)))
            if not isinstance(resp, nio.RoomMessagesResponse):
                raise MatrixError(f"reading missed messages in {room_id} failed: {resp}")
            if not resp.chunk:
                break
            found.extend(resp.chunk)
            token = resp.end if resp.end != token else None
        return found[::-1]

    async def is_encrypted(self, room_id: str) -> bool | None:
        """Whether the room has turned on end-to-end encryption (its ``m.room.encryption``
        state event exists; spec "End-to-End Encryption"), or None when the homeserver could
        not say."""
        resp = await self.client.room_get_state_event(room_id, "m.room.encryption")
        if isinstance(resp, nio.RoomGetStateEventResponse):
            return True
        if getattr(resp, "status_code", None) == "M_NOT_FOUND":
            return False
        log.warning("cannot tell whether %s is encrypted: %s", room_id, resp)
        return None

    async def display_name(self) -> str | None:
        """The bot's own display name, if set."""
        resp = await self.client.get_displayname(self.cfg.user_id)
        return getattr(resp, "displayname", None)

