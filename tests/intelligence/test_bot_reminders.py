"""Reminders end to end through Matrix (the running bot, real Synapse and PostgreSQL): one
delivery across a restart, cancel and change, and the questions the bot asks back about a
time (kept in the database across a restart). Due times are moved in the database, so no
test races the wall clock. The phrasings themselves: test_timeparse.py."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from bot_matrix import BotRunner, TestUser, bot_id

pytestmark = pytest.mark.services


def _reminder(text: str) -> Any:
    return lambda e: e["content"].get("body", "").startswith("⏰") and text in e["content"]["body"]


async def _make_due(bot: BotRunner, reminder: str) -> None:
    """Move reminder ``r<id>`` to a second ago: the test decides when it falls due, so no
    step of it races the wall clock (a slow host once took 5 s for one reply)."""
    async with await psycopg.AsyncConnection.connect(bot.cfg.database_url,
                                                     autocommit=True) as conn:
        await conn.execute("UPDATE reminders SET due_at = now() - interval '1 second' "
                           "WHERE id = %s", (int(reminder[1:]),))


def _rid(reply: str) -> str:
    m = re.search(r"\[(r\d+)\]", reply)
    assert m, reply
    return m.group(1)


async def test_reminder_delivered_once_across_restart(bot: BotRunner, alice: TestUser) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    reply = await alice.ask(room, "/remind in 1 hour put the bins out")
    assert "put the bins out" in await alice.ask(room, "/reminders")
    await bot.stop()  # the bot is down when the reminder falls due
    await _make_due(bot, _rid(reply))
    await bot.start()
    await alice.wait_for(room, _reminder("put the bins out"), what="reminder")
    assert bot.bot and bot.bot.scheduler
    assert await bot.bot.scheduler.run_once() == 0  # one more pass of its own: nothing left
    assert "No reminders pending" in await alice.ask(room, "/reminders")
    events = await alice.events(room)
    assert sum(_reminder("put the bins out")(e) for e in events) == 1


async def test_reminder_cancel(bot: BotRunner, alice: TestUser) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    cancelled = _rid(await alice.ask(room, "/remind in 1 hour water the plants"))
    assert "Cancelled" in await alice.ask(room, f"/remind cancel {cancelled}")
    await _make_due(bot, cancelled)
    # A later one, due now: once it is delivered, the cancelled one (due earlier) would
    # have been delivered before it.
    sentinel = _rid(await alice.ask(room, "/remind in 1 hour feed the cat"))
    await _make_due(bot, sentinel)
    bot.bot.scheduler.poke()  # type: ignore[union-attr]
    await alice.wait_for(room, _reminder("feed the cat"), what="the later reminder")
    assert not any(_reminder("water the plants")(e) for e in await alice.events(room))


async def test_a_reminder_time_question_is_answered_after_a_restart(
    bot: BotRunner, alice: TestUser
) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    asked = await alice.ask(room, "/remind on the 31st of February pay the rent")
    assert "There is no 31 February" in asked and "pay the rent" in asked, asked
    chat = await alice.say(room, "sounds good")  # ordinary chat is not an answer
    await bot.stop()
    await bot.start()  # the question is kept in the database, not in the bot's memory
    reply = await alice.ask(room, "28/2 at 9am")
    assert re.search(r"I'll remind this room \w+ 28 February \d{4} at 09:00 GMT "
                     r"\(Europe/London\): pay the rent \[r\d+\]", reply), reply
    assert "pay the rent" in await alice.ask(room, "/reminders")
    # The chat before the answer, handled in order, got nothing; the question is used up.
    assert chat not in await alice.replies(room, bot_id(bot))
    later = await alice.say(room, "28/2 at 10am")
    assert "/remember" in await alice.ask(room, "/help")  # handled after `later`, in order
    assert later not in await alice.replies(room, bot_id(bot))


async def test_a_bare_hour_is_the_next_one_and_easy_to_change(
    bot: BotRunner, alice: TestUser
) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    reply = await alice.ask(room, "/remind at 7 call mum")
    assert "GMT (Europe/London)" in reply or "BST (Europe/London)" in reply, reply
    change = re.search(r"(/remind change r\d+ \d+ \w+ \d\d:\d\d)", reply)
    assert change, reply
    moved = await alice.ask(room, change.group(1))
    assert moved.startswith("OK, r") and "call mum" in moved, moved
    assert change.group(1).split()[-1] in moved  # the other reading's hour, e.g. 07:00
