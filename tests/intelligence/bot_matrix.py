"""A family member in tests: a matrix-nio client that creates rooms, talks, and reads replies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nio
from test_heartbeat_check import check

from memu_dev.services import MatrixUser
from memu_intelligence.bot import Bot
from memu_intelligence.config import Config

DEADLINE = 20.0


def replied_to(ev: dict[str, Any]) -> str | None:
    """The event id a message event replies to (``m.relates_to.m.in_reply_to``), or None."""
    return ev["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")


def check_heartbeat(path: str) -> Any:
    """The container's health check (image/intelligence/…/intelligence-alive) on ``path``:
    the finished process (``returncode``, ``stderr``)."""
    return check(Path(path))


def wait_for_file(path: Path, deadline_s: float) -> None:
    """Wait until ``path`` exists; fail after ``deadline_s`` seconds."""
    end = time.monotonic() + deadline_s
    while not path.exists():
        assert time.monotonic() < end, f"{path} did not appear within {deadline_s} s"
        time.sleep(0.3)


def bot_id(bot: BotRunner) -> str:
    """The running bot's Matrix user ID."""
    return bot.cfg.user_id


class TestUser:
    """One logged-in (token) user; every wait has a deadline and fails with what it saw."""

    __test__ = False  # not a pytest test class

    def __init__(self, homeserver: str, account: MatrixUser) -> None:
        self.account = account
        self.client = nio.AsyncClient(homeserver, account.user_id, device_id=account.device_id)
        self.client.access_token = account.access_token
        self.client.user_id = account.user_id

    async def close(self) -> None:
        await self.client.close()

    async def create_room(
        self, invite: list[str], *, encrypted: bool = False, is_direct: bool = False
    ) -> str:
        state = ([{"type": "m.room.encryption", "state_key": "",
                   "content": {"algorithm": "m.megolm.v1.aes-sha2"}}] if encrypted else [])
        resp = await self.client.room_create(invite=invite, initial_state=state,
                                             is_direct=is_direct)
        assert isinstance(resp, nio.RoomCreateResponse), resp
        return str(resp.room_id)

    async def wait_joined(self, room_id: str, user_id: str, *, present: bool = True) -> None:
        deadline = time.monotonic() + DEADLINE
        members: list[str] = []
        while time.monotonic() < deadline:
            resp = await self.client.joined_members(room_id)
            if isinstance(resp, nio.JoinedMembersResponse):
                members = [m.user_id for m in resp.members]
                if (user_id in members) == present:
                    return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{user_id} joined={present} not seen in {room_id}: {members}")

    async def room_with_bot(self, bot_id: str, **kw: Any) -> str:
        room = await self.create_room([bot_id], **kw)
        await self.wait_joined(room, bot_id)
        return room

    async def say(self, room_id: str, text: str, **extra: Any) -> str:
        """Send ``text`` (with ``extra`` content keys, e.g. ``m.mentions``); its event id."""
        resp = await self.client.room_send(room_id, "m.room.message",
                                           {"msgtype": "m.text", "body": text, **extra})
        assert isinstance(resp, nio.RoomSendResponse), resp
        return str(resp.event_id)

    async def events(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The room's latest message events, oldest first (raw event dicts)."""
        resp = await self.client.room_messages(room_id, limit=limit,
                                               message_filter={"types": ["m.room.message"]})
        assert isinstance(resp, nio.RoomMessagesResponse), resp
        return [e.source for e in reversed(resp.chunk)]

    async def wait_for(
        self, room_id: str, match: Callable[[dict[str, Any]], bool], *,
        deadline: float = DEADLINE, what: str = "event",
    ) -> dict[str, Any]:
        end = time.monotonic() + deadline
        seen: list[dict[str, Any]] = []
        while time.monotonic() < end:
            seen = await self.events(room_id)
            for ev in seen:
                if match(ev):
                    return ev
            await asyncio.sleep(0.2)
        bodies = [f"{e['sender']}: {e['content'].get('body')}" for e in seen[-10:]]
        raise AssertionError(f"no {what} in {room_id} within {deadline}s; last: {bodies}")

    async def ask(self, room_id: str, text: str, *, deadline: float = DEADLINE,
                  **extra: Any) -> str:
        """Send ``text`` (and ``extra`` content) and return the body of the bot's reply."""
        event_id = await self.say(room_id, text, **extra)

        ev = await self.wait_for(room_id, lambda e: replied_to(e) == event_id,
                                 deadline=deadline, what=f"reply to {text!r}")
        return str(ev["content"]["body"])

    async def replies(self, room_id: str, sender: str, *, limit: int = 500
                      ) -> dict[str, list[dict[str, Any]]]:
        """``sender``'s replies among the room's latest ``limit`` messages, by the event
        they reply to, oldest first."""
        out: dict[str, list[dict[str, Any]]] = {}
        for e in await self.events(room_id, limit=limit):
            to = replied_to(e)
            if e["sender"] == sender and to:
                out.setdefault(to, []).append(e)
        return out


class BotRunner:
    """Starts, stops and restarts the bot in this test's event loop."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.bot: Bot | None = None

    async def start(self) -> Bot:
        self.bot = Bot(self.cfg)
        await self.bot.start()
        self.bot.run_in_background()
        await asyncio.wait_for(self.bot.synced.wait(), timeout=30)
        return self.bot

    async def stop(self) -> None:
        if self.bot:
            await self.bot.stop()
            self.bot = None
