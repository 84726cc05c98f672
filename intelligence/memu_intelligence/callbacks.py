"""What the bot does with each ``/sync`` response: invites, encrypted rooms, messages.

Spec references (Matrix client-server API): "Syncing" (``rooms.invite`` / ``rooms.join``
sections), "Room membership" (accepting/rejecting invites), "End-to-End Encryption"
(``m.room.encryption`` / ``m.room.encrypted``).

Each room has a lane: its events are handled one after another, in order, across sync
batches, and rooms never wait for each other. Work that waits for the language model
(``commands.SLOW``: a recall) runs on the room's slow lane, in order among itself, so
commands that need no model are never queued behind it, in that room or another; a recall
only reads, so running beside later commands changes no effect's order.
``start_batch()`` hands a batch to the lanes and returns at once with a future that is done
when every event of the batch is handled, slow work included; the caller stores the batch's
``next_batch`` token only then, and in batch order (see ``bot.Bot.run``, ``db.SyncState``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

import nio
import psycopg
from psycopg_pool import PoolTimeout

from memu_intelligence.commands import ANSWER, SLOW, Commands, Request
from memu_intelligence.config import Config
from memu_intelligence.errors import UserFacingError
from memu_intelligence.matrix import Matrix, MatrixError
from memu_intelligence.text import (
    Command,
    addressed,
    is_acknowledgement,
    is_question,
    parse_command,
    strip_mention,
)

log = logging.getLogger(__name__)

E2EE_NOTICE = (
    "Hello! I'm Memu, the family assistant. This room is end-to-end encrypted, and I can't "
    "read encrypted messages, so I can't help here. Invite me to an unencrypted family room "
    "(or start an unencrypted chat with me) and I'll be glad to remember things, keep lists "
    "and send reminders."
)
DB_APOLOGY = ("Sorry — I couldn't reach my memory just now, so nothing was changed. "
              "Please try again in a minute.")
GENERIC_APOLOGY = "Sorry — something went wrong on my side. Please try again."
ENCRYPTED_REFUSAL = (
    "This room is end-to-end encrypted now, and I can't read or send encrypted messages, so "
    "I won't answer here: my answer would go out unencrypted, and it could hold what the "
    "family told me. Ask me in an unencrypted room (or a private chat with me) instead.")
E2EE_NOTICE_INTERVAL = 3600.0
#: Said before a reply to a command sent more than ``Config.away_after`` seconds before.
AWAY_NOTE = "(Sorry for the wait: I was away when you sent this.)"


def may_serve(inviter: str, server_name: str) -> bool:
    """True when ``inviter`` is a user of the bot's own homeserver (``@name:server_name``).

    The server part is everything after the first ``:`` (it may carry a port), compared
    exactly, so ``@eve:evil.example`` or ``@eve:family.example.evil`` never match.
    """
    if not inviter.startswith("@") or ":" not in inviter:
        return False
    return inviter.split(":", 1)[1] == server_name


def unusable(text: str) -> str | None:
    """Why ``text`` cannot be stored or searched (PostgreSQL text holds no NUL character and
    only valid Unicode), in words that say what to change; None when it can."""
    if "\x00" in text:
        return ("Your message has an invisible “null” character in it, which I can't store. "
                "Please type it again without pasting that part.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return ("Your message has a broken character in it (half of an emoji?), which I "
                "can't store. Please type it again.")
    return None


def strip_reply_fallback(body: str) -> str:
    """Drop the ``> <@user> quoted`` lines clients put before a reply's text."""
    lines = body.splitlines()
    if not lines or not lines[0].startswith("> "):
        return body
    while lines and lines[0].startswith(">"):
        lines.pop(0)
    return "\n".join(lines).strip()


class SyncHandler:
    """Turns sync responses into joins, leaves, replies and command runs."""

    def __init__(self, cfg: Config, matrix: Matrix, commands: Commands) -> None:
        self.cfg = cfg
        self.matrix = matrix
        self.commands = commands
        self.display_name: str | None = None
        self._e2ee_told: dict[str, float] = {}
        self._encrypted: dict[str, bool] = {}
        self._lanes: dict[str, asyncio.Task[list[asyncio.Task[None]]]] = {}
        self._slow_lanes: dict[str, asyncio.Task[None]] = {}

    async def handle(self, resp: nio.SyncResponse, *, timeline: bool = True) -> None:
        """Handle one sync response and wait until it is done; ``timeline=False`` handles
        invites only (first start)."""
        await (await self.start_batch(resp, timeline=timeline))

    async def start_batch(self, resp: nio.SyncResponse, *, timeline: bool = True,
                          since: str | None = None) -> asyncio.Future[Any]:
        """Answer invites, then queue each room's events on that room's lane; the returned
        future is done when all of them are handled (never with an error: each event's
        failure becomes a reply and a log line).

        ``since`` is the token the sync started from: when a room's timeline is ``limited``
        (more happened than one sync carries, e.g. while the bot was down), its lane first
        reads what was left out (``Matrix.missed``), so every message is answered, oldest
        first.
        """
        for room_id, info in resp.rooms.invite.items():
            await self._on_invite(room_id, info.invite_state)
        lanes: list[asyncio.Task[list[asyncio.Task[None]]]] = []
        if timeline:
            for room_id, info in resp.rooms.join.items():
                events = list(info.timeline.events)
                if any(isinstance(e, nio.RoomEncryptionEvent) for e in [*info.state, *events]):
                    self._encrypted[room_id] = True
                    await self._tell_e2ee(room_id)
                gap = (info.timeline.prev_batch, since) if (
                    info.timeline.limited and since and info.timeline.prev_batch) else None
                lanes.append(self._queue(room_id, events, gap))

        async def done() -> None:
            spawned = await asyncio.gather(*lanes)
            await asyncio.gather(*(task for tasks in spawned for task in tasks))

        return asyncio.ensure_future(done())

    def _queue(self, room_id: str, events: list[Any], gap: tuple[str, str] | None = None
               ) -> asyncio.Task[list[asyncio.Task[None]]]:
        """Handle ``events`` (after the ``gap`` before them, when given) after everything
        queued before in this room; the task's result is the slow work it started."""
        before = self._lanes.get(room_id)

        async def lane() -> list[asyncio.Task[None]]:
            if before is not None:
                await asyncio.wait([before])  # its own failures were replied to and logged
            missed: list[Any] = []
            if gap is not None:
                try:
                    missed = await self.matrix.missed(room_id, *gap)
                except MatrixError:
                    log.exception("could not read what was missed in %s", room_id)
                log.info("catching up on %d events missed in %s", len(missed), room_id)
            return await self._room(room_id, _since_our_join([*missed, *events],
                                                             self.cfg.user_id))

        task = asyncio.create_task(lane(), name=f"memu-room-{room_id}")
        self._lanes[room_id] = task
        task.add_done_callback(
            lambda t: self._lanes.pop(room_id, None) if self._lanes.get(room_id) is t else None)
        return task

    def _queue_slow(self, room_id: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` after the slow work queued before in this room."""
        before = self._slow_lanes.get(room_id)

        async def lane() -> None:
            try:
                if before is not None:
                    await asyncio.wait([before])
            except asyncio.CancelledError:
                work.close()  # cancelled before it began: it never runs
                raise
            await work

        task = asyncio.create_task(lane(), name=f"memu-slow-{room_id}")
        self._slow_lanes[room_id] = task
        task.add_done_callback(
            lambda t: self._slow_lanes.pop(room_id, None)
            if self._slow_lanes.get(room_id) is t else None)
        return task

    async def close(self) -> None:
        """Cancel the lanes' work (what was not handled is handled again after a restart:
        its batch's token was not stored)."""
        lanes: list[asyncio.Task[Any]] = [*self._lanes.values(), *self._slow_lanes.values()]
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)

    async def _on_invite(self, room_id: str, state: list[Any]) -> None:
        inviter = next(
            (e.sender for e in state if isinstance(e, nio.InviteMemberEvent)
             and e.state_key == self.cfg.user_id and e.membership == "invite"),
            None,
        )
        if inviter is None or not may_serve(inviter, self.cfg.server_name):
            log.info("rejecting invite to %s from %s (not from %s)", room_id, inviter,
                     self.cfg.server_name)
            await self.matrix.leave(room_id)
            return
        log.info("joining %s (invited by %s)", room_id, inviter)
        await self.matrix.join(room_id)
        # Whether the room is encrypted shows in the next sync's state (see handle()).

    async def _room(self, room_id: str, events: list[Any]) -> list[asyncio.Task[None]]:
        spawned: list[asyncio.Task[None]] = []
        for event in events:
            try:
                slow = await self._event(room_id, event)
            except Exception:
                log.exception("unexpected error handling %s in %s", event, room_id)
                continue
            if slow is not None:
                spawned.append(slow)
        return spawned

    async def _event(self, room_id: str, event: Any) -> asyncio.Task[None] | None:
        """Handle one event; the slow work it started, if any."""
        if getattr(event, "sender", None) == self.cfg.user_id:
            return None
        if isinstance(event, nio.MegolmEvent | nio.RoomEncryptionEvent):
            await self._tell_e2ee(room_id)
            return None
        if not isinstance(event, nio.RoomMessageText):
            return None
        content = event.source.get("content", {})
        if content.get("m.relates_to", {}).get("rel_type") == "m.replace":
            return None  # an edit: the original was handled already
        body = strip_reply_fallback(event.body or "")
        cmd = parse_command(body)
        if cmd is None:
            question = self._mentioned(body, content)
            # Ordinary chat (found later through history search) is offered as the answer
            # to a question the bot asked its sender, and otherwise left alone.
            cmd = Command(ANSWER, body) if question is None else Command("recall", question)
        work = self.dispatch(room_id, event.sender, event.event_id, cmd,
                             sent_ms=getattr(event, "server_timestamp", None))
        if cmd.name in SLOW:
            return self._queue_slow(room_id, work)
        await work
        return None

    def _mentioned(self, body: str, content: dict[str, Any]) -> str | None:
        """The question of a message addressed to the bot, or None (not for the bot).

        Addressed: the message starts with the bot's name and ``:`` or ``,``, or its
        ``m.mentions`` or a mention pill (``https://matrix.to/#/<bot>`` in the formatted
        body; Matrix client-server spec, "User and room mentions") names the bot. Thanks
        and ``ok`` get nothing, and neither does a reply that asks nothing (clients put the
        replied-to sender in ``m.mentions``: "thanks!" to the bot's answer is not a question).
        """
        question = addressed(body, self.cfg.user_id, self.display_name)
        ids = content.get("m.mentions", {}).get("user_ids", [])
        pill = f"matrix.to/#/{self.cfg.user_id}" in str(content.get("formatted_body", ""))
        if question is None and (self.cfg.user_id in ids or pill):
            question = strip_mention(body, self.cfg.user_id, self.display_name) or body.strip()
        if question is None or is_acknowledgement(question):
            return None
        if "m.in_reply_to" in content.get("m.relates_to", {}) and not is_question(question):
            return None
        return question

    async def dispatch(self, room_id: str, sender: str, event_id: str, cmd: Command, *,
                       sent_ms: int | None = None) -> None:
        """Run ``cmd`` and reply; every failure becomes a reply and a log line, never a crash.

        Only an unreachable database (connection lost, pool exhausted) gets the "try again in
        a minute" apology: a retry can help there. Input the database cannot take is refused
        before it gets there (:func:`unusable`); any other database error is a bug of ours.
        """
        reply: str | None
        if await self._is_encrypted(room_id):
            # A plain message can still arrive in an encrypted room (from a client without
            # encryption): answering it would put the family's memories there in clear text.
            reply = None if cmd.name == ANSWER else ENCRYPTED_REFUSAL
        elif len(cmd.args) > self.cfg.max_message_chars:
            reply = (f"That's too long for me — please keep it under "
                     f"{self.cfg.max_message_chars} characters.")
        elif (why := unusable(cmd.args)) is not None:
            reply = why
        else:
            try:
                reply = await self.commands.run(cmd, Request(room_id, sender, event_id, cmd.args))
            except UserFacingError as e:
                reply = str(e)
            except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout):
                log.exception("database unreachable in /%s (room %s)", cmd.name, room_id)
                reply = DB_APOLOGY
            except MatrixError:
                log.exception("homeserver error in /%s (room %s)", cmd.name, room_id)
                reply = GENERIC_APOLOGY
            except Exception:
                log.exception("bug in /%s (room %s)", cmd.name, room_id)
                reply = GENERIC_APOLOGY
        if reply is None:
            return
        if sent_ms is not None and time.time() - sent_ms / 1000 > self.cfg.away_after:
            reply = f"{AWAY_NOTE}\n{reply}"
        txn = "memu-reply-" + hashlib.sha256(event_id.encode()).hexdigest()[:32]
        try:
            await self.matrix.send_notice(room_id, reply, reply_to=event_id, txn_id=txn)
        except MatrixError:
            log.exception("could not reply in %s", room_id)

    async def _is_encrypted(self, room_id: str) -> bool:
        """Whether ``room_id`` is encrypted: seen in a sync, else asked once (a restarted bot
        has not seen the room's state)."""
        known = self._encrypted.get(room_id)
        if known is None:
            try:
                known = await self.matrix.is_encrypted(room_id)
            except Exception:
                log.exception("cannot tell whether %s is encrypted", room_id)
                known = None
            if known is not None:
                self._encrypted[room_id] = known
        return bool(known)

    async def _tell_e2ee(self, room_id: str) -> None:
        now = time.monotonic()
        last = self._e2ee_told.get(room_id)
        if last is not None and now - last < E2EE_NOTICE_INTERVAL:
            return
        self._e2ee_told[room_id] = now
        try:
            await self.matrix.send_notice(room_id, E2EE_NOTICE)
        except MatrixError:
            log.exception("could not explain encryption in %s", room_id)


def _since_our_join(events: list[Any], user_id: str) -> list[Any]:
    """The events after our own join when this batch holds it (a room we just joined may
    show older messages, which were not addressed to us), else all of them."""
    for i in range(len(events) - 1, -1, -1):
        e = events[i]
        if (isinstance(e, nio.RoomMemberEvent) and e.state_key == user_id
                and e.membership == "join" and e.prev_membership != "join"):
            return events[i + 1 :]
    return events
