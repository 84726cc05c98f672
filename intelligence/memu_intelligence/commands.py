"""The bot's commands: one ``async`` handler per ``/word``, each returning the reply text.

Handlers raise ``UserFacingError`` for input they cannot use (the dispatcher sends its text
back); database errors propagate to the dispatcher, which apologises (``callbacks.py``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from memu_intelligence.config import Config
from memu_intelligence.errors import UserFacingError
from memu_intelligence.lists import ListStore
from memu_intelligence.llm import Llm
from memu_intelligence.matrix import Matrix
from memu_intelligence.memory import MemoryStore
from memu_intelligence.recall import Recaller
from memu_intelligence.reminders import ReminderScheduler, ReminderStore
from memu_intelligence.text import Command, extract_tags, one_line, parse_short_id
from memu_intelligence.timefmt import format_full, format_time, other_phrase
from memu_intelligence.timeparse import (
    Question,
    Reading,
    Unclear,
    check_future,
    parse_reminder,
    read_when,
)

PER_PAGE = 10

HELP = """I'm Memu, this room's memory. What I'm told here stays in this room.
/remember <fact> [#tag …] — keep a fact, e.g. /remember the wifi password is hunter2 #home
/recall <question> — answer from what I remember and from this room's history
  (or just mention me with a question)
/forget <id> — forget one fact (ids look like m12)
/memories [#tag] [page] — list what I remember, newest first
/export — this room's memories as a JSON file
/list add <list> <item>[, <item> …] · /list show [<list>] · /list done <list> <item or number>
  · /list clear <list>
/remind <when> <what> — e.g. /remind tomorrow 8am put the bins out, /remind in 20 minutes …
/reminders — what is still to come · /remind cancel <id> · /remind change <id> <when>
/help — this text"""


@dataclass(frozen=True)
class Request:
    """Who asked what, where: the Matrix event a command came from."""

    room_id: str
    sender: str
    event_id: str
    args: str


Handler = Callable[["Commands", Request], Awaitable[str | None]]
#: The name under which a plain message (no command, no mention) is offered to the bot: it
#: answers only when it completes a reminder whose time it asked about. Not a ``/word``.
ANSWER = "(answer)"
#: Commands that wait for the language model: run beside the room's other commands, not
#: before them (``callbacks``). Only reads: no effect changes order.
SLOW = frozenset({"recall"})


class Commands:
    """All command handlers, bound to the stores and services they use."""

    def __init__(
        self,
        cfg: Config,
        matrix: Matrix,
        memory: MemoryStore,
        lists: ListStore,
        reminders: ReminderStore,
        scheduler: ReminderScheduler,
        recaller: Recaller,
        llm: Llm,
    ) -> None:
        self.cfg = cfg
        self.matrix = matrix
        self.memory = memory
        self.lists = lists
        self.reminders = reminders
        self.scheduler = scheduler
        self.recaller = recaller
        self.llm = llm

    async def run(self, cmd: Command, req: Request) -> str | None:
        """Run one command; returns the reply (None when the handler replied itself).

        Raises:
            UserFacingError: unknown command or unusable arguments.
        """
        handler = _HANDLERS.get(cmd.name)
        if handler is None:
            raise UserFacingError(f"I don't know /{cmd.name}. Try /help to see what I can do.")
        return await handler(self, req)

    async def help(self, req: Request) -> str:
        """``/help``."""
        return HELP

    async def remember(self, req: Request) -> str:
        """``/remember <fact>``: store it with its ``#tags``; reply with the short id."""
        text = req.args.strip()
        if not text:
            raise UserFacingError("What should I remember? e.g. /remember the bins go out on "
                                  "Thursday #home")
        embedding = None
        if self.memory.vector:
            vectors = await self.llm.embed([text])
            embedding = vectors[0] if vectors else None
        mem = await self.memory.add(req.room_id, req.sender, text, extract_tags(text),
                                    event_id=req.event_id, embedding=embedding)
        tags = f" (tags: {', '.join('#' + t for t in mem.tags)})" if mem.tags else ""
        return f"Got it — remembered as {mem.short_id}{tags}."

    async def recall(self, req: Request) -> str:
        """``/recall <question>`` (and mentions): see ``recall.Recaller``."""
        question = req.args.strip()
        if not question:
            raise UserFacingError("What would you like me to recall? e.g. /recall wifi password")
        answer = await self.recaller.recall(req.room_id, question, exclude_events=[req.event_id])
        return answer.text

    async def forget(self, req: Request) -> str:
        """``/forget <id>``: delete one memory of this room."""
        if not req.args:
            raise UserFacingError("Which one? e.g. /forget m12 (see /memories for ids).")
        mem = await self.memory.forget(req.room_id, parse_short_id(req.args, "m"))
        if mem is None:
            return f"I have no memory {req.args.strip()} in this room."
        return f"Forgotten {mem.short_id}: “{one_line(mem.body, 80)}”."

    async def memories(self, req: Request) -> str:
        """``/memories [#tag] [page]``: one page of this room's memories, newest first."""
        tag, page = None, 1
        for word in req.args.split():
            if word.startswith("#") and len(word) > 1:
                tag = word[1:].lower()
            elif word.isascii() and word.isdigit():
                # A page past the last says so below; beyond 10^6 it is past any room's last
                # (and int() of thousands of digits, or OFFSET past bigint, would fail).
                page = max(int(word), 1) if len(word) <= 6 else 10**6
            elif word.lower() != "page":
                raise UserFacingError("Use /memories, /memories #tag, or /memories #tag 2.")
        items, total = await self.memory.page(req.room_id, tag=tag, page=page, per_page=PER_PAGE)
        scope = f" tagged #{tag}" if tag else ""
        if total == 0:
            return f"I don't remember anything{scope} in this room yet."
        pages = (total + PER_PAGE - 1) // PER_PAGE
        if not items:
            return f"There are only {pages} page(s) of memories{scope}."
        lines = [f"{m.short_id} {one_line(m.body, 120)} — {m.author}, {m.created_at:%Y-%m-%d}"
                 for m in items]
        more = (f"\nPage {page} of {pages}; /memories {'#' + tag + ' ' if tag else ''}"
                f"{page + 1} for more." if page < pages else "")
        return f"{total} memories{scope}:\n" + "\n".join(lines) + more

    async def export(self, req: Request) -> str | None:
        """``/export``: upload this room's memories as ``memu-memories.json``."""
        items = await self.memory.all(req.room_id)
        doc = {"room_id": req.room_id, "exported_at": dt.datetime.now(dt.UTC).isoformat(),
               "memories": [m.as_json() for m in items]}
        data = json.dumps(doc, indent=2, ensure_ascii=False).encode()
        await self.matrix.send_file(req.room_id, "memu-memories.json", data, "application/json")
        return f"Here are {len(items)} memories from this room."

    async def list_(self, req: Request) -> str:
        """``/list add|show|done|clear <list> …``."""
        sub, _, rest = req.args.partition(" ")
        sub = sub.lower()
        name, _, items = rest.strip().partition(" ")
        if sub in {"", "show"} and not name:
            lists = await self.lists.names(req.room_id)
            if not lists:
                return "There are no lists in this room yet. Start one with /list add shopping milk"
            return "Lists: " + ", ".join(f"{n} ({c})" for n, c in lists)
        if sub not in {"add", "show", "done", "clear"} or not name:
            raise UserFacingError("Use /list add shopping milk, /list show shopping, "
                                  "/list done shopping milk or /list clear shopping.")
        if sub == "add":
            new = [i.strip() for i in items.split(",") if i.strip()]
            if not new:
                raise UserFacingError(f"What should I add to {name}? e.g. /list add {name} milk")
            count = await self.lists.add(req.room_id, name, new, req.sender,
                                         event_id=req.event_id)
            return f"Added {', '.join(new)} to {name.lower()} ({count} to get)."
        if sub == "show":
            shown = await self.lists.show(req.room_id, name)
            if shown is None:
                return f"There is no list called {name.lower()} here."
            if not shown:
                return f"{name.lower()} is empty — all done!"
            body = "\n".join(f"{i}. {item.text}" for i, item in enumerate(shown, start=1))
            return f"{name.lower()}:\n{body}"
        if sub == "done":
            if not items.strip():
                raise UserFacingError(f"Which item? e.g. /list done {name} milk")
            item = await self.lists.done(req.room_id, name, items, event_id=req.event_id)
            if item is None:
                return f"I can't find “{items.strip()}” on {name.lower()}."
            return f"Ticked off {item.text} on {name.lower()}."
        cleared = await self.lists.clear(req.room_id, name, event_id=req.event_id)
        if cleared is None:
            return f"There is no list called {name.lower()} here."
        return f"Cleared {name.lower()} ({cleared} open items removed)."

    async def remind(self, req: Request) -> str:
        """``/remind <when> <what>`` or ``/remind cancel <id>``."""
        if not req.args:
            raise UserFacingError("e.g. /remind tomorrow 8am put the bins out")
        first, _, rest = req.args.partition(" ")
        if first.lower() == "cancel":
            rem = await self.reminders.cancel(req.room_id, parse_short_id(rest, "r"))
            if rem is None:
                return f"There is no pending reminder {rest.strip()} in this room."
            return f"Cancelled {rem.short_id}: {one_line(rem.body, 80)}."
        if first.lower() in ("change", "move"):
            return await self._change(req, rest)
        now = dt.datetime.now(dt.UTC)
        parsed = await asyncio.to_thread(parse_reminder, req.args, self.cfg.tz, now,
                                         self.cfg.locale)
        if isinstance(parsed, Unclear):
            return await self._ask(req, parsed)
        return await self._confirm(req, parsed.when, parsed.text, now)

    async def answer(self, req: Request) -> str | None:
        """A plain message: when its sender has an open question about a reminder's time in
        this room and the message reads as a time, the reminder is made; otherwise None
        (ordinary chat gets no answer)."""
        pending = await self.reminders.question(req.room_id, req.sender)
        if pending is None:
            return None
        now = dt.datetime.now(dt.UTC)
        when = await asyncio.to_thread(read_when, req.args, self.cfg.tz, now, self.cfg.locale)
        if when is None:
            return None
        if isinstance(when, Question):
            await self.reminders.ask(req.room_id, req.sender, pending.body, when.ask,
                                     event_id=pending.event_id)
            return when.ask
        return await self._confirm(req, when, pending.body, now)

    async def _ask(self, req: Request, unclear: Unclear) -> str:
        """Keep the reminder's text waiting for the answer to its question; the question."""
        if not unclear.text:
            raise UserFacingError(f"{unclear.question.ask} Then send the whole reminder, e.g. "
                                  f"/remind 28 February 9am pay the rent.")
        await self.reminders.ask(req.room_id, req.sender, unclear.text, unclear.question.ask,
                                 event_id=req.event_id)
        return (f"{unclear.question.ask} Just reply with the date and time, and I'll remind "
                f"this room: {unclear.text}")

    async def _confirm(self, req: Request, when: Reading, text: str, now: dt.datetime) -> str:
        """Store the reminder (keyed by ``req``'s event) and say exactly when it is due."""
        check_future(when, self.cfg.tz, now)
        rem = await self.reminders.add(req.room_id, req.sender, text, when.due,
                                       event_id=req.event_id)
        self.scheduler.poke()
        reply = (f"OK, I'll remind this room {format_full(rem.due_at, self.cfg.tz, now)}: "
                 f"{rem.body} [{rem.short_id}]")
        if when.assumed:
            reply += f"\n({when.assumed.capitalize()}.)"
        if when.other is not None:
            reply += (f"\nI took the next {when.due.astimezone(self.cfg.tz):%H:%M}. For "
                      f"{format_full(when.other, self.cfg.tz, now)} instead: /remind change "
                      f"{rem.short_id} {other_phrase(when.other, self.cfg.tz)}")
        return reply

    async def _change(self, req: Request, rest: str) -> str:
        """``/remind change <id> <when>``: a pending reminder of this room, due at <when>."""
        rid, _, phrase = rest.strip().partition(" ")
        if not phrase.strip():
            raise UserFacingError("e.g. /remind change r3 tomorrow 7am")
        reminder_id = parse_short_id(rid, "r")
        now = dt.datetime.now(dt.UTC)
        when = await asyncio.to_thread(read_when, phrase, self.cfg.tz, now, self.cfg.locale)
        if when is None:
            raise UserFacingError(f"I couldn't read “{phrase.strip()}” as a time, e.g. "
                                  f"/remind change {rid} tomorrow 7am")
        if isinstance(when, Question):
            raise UserFacingError(when.ask)
        check_future(when, self.cfg.tz, now)
        rem = await self.reminders.change(req.room_id, reminder_id, when.due)
        if rem is None:
            return f"There is no pending reminder {rid} in this room."
        return (f"OK, {rem.short_id} is now {format_full(rem.due_at, self.cfg.tz, now)}: "
                f"{one_line(rem.body, 80)}")

    async def reminders_(self, req: Request) -> str:
        """``/reminders``: this room's pending reminders."""
        items = await self.reminders.upcoming(req.room_id)
        if not items:
            return "No reminders pending in this room."
        now = dt.datetime.now(dt.UTC)
        return "Coming up:\n" + "\n".join(
            f"{r.short_id} {format_time(r.due_at, self.cfg.tz, now)} — {one_line(r.body, 100)}"
            for r in items
        )


_HANDLERS: dict[str, Handler] = {
    "help": Commands.help,
    "start": Commands.help,
    "remember": Commands.remember,
    "recall": Commands.recall,
    "forget": Commands.forget,
    "memories": Commands.memories,
    "export": Commands.export,
    "list": Commands.list_,
    "lists": Commands.list_,
    "remind": Commands.remind,
    "reminders": Commands.reminders_,
    ANSWER: Commands.answer,
}
