"""End to end through Matrix: a family member talks to the running bot in real rooms."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from typing import Any

import nio
import psycopg
import pytest
from bot_matrix import BotRunner, TestUser, bot_id, replied_to

from memu_dev.fake_ollama import FakeOllama
from memu_intelligence.callbacks import (
    AWAY_NOTE,
    DB_APOLOGY,
    E2EE_NOTICE,
    ENCRYPTED_REFUSAL,
    GENERIC_APOLOGY,
)
from memu_intelligence.config import Config
from memu_intelligence.recall import DOWNLOADING, UNAVAILABLE

pytestmark = pytest.mark.services


async def test_remember_then_recall_cites_memory_and_history(
    bot: BotRunner, alice: TestUser, fake_ollama: FakeOllama
) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    await alice.say(room, "the spare key is under the blue flowerpot")
    reply = await alice.ask(room, "/remember the wifi password is hunter2 #home")
    m = re.search(r"remembered as (m\d+) \(tags: #home\)", reply)
    assert m, reply
    answer = await alice.ask(room, "/recall what is the wifi password and where is the spare key")
    assert "hunter2" in answer and f"[{m.group(1)}]" in answer, answer
    assert "flowerpot" in answer, answer
    assert re.search(r"Sources: .*m\d+.*h1 \(@alice:memu.test", answer), answer
    prompt = json.dumps(fake_ollama.requests[-1]["messages"])
    assert "hunter2" in prompt and "flowerpot" in prompt
    assert "/remember" not in prompt  # commands are not context


async def test_a_fact_said_once_is_found_however_often_it_was_asked(
    bot: BotRunner, alice: TestUser
) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    await alice.say(room, "the spare key is under the blue flowerpot")
    # More questions (and answers quoting the fact) than the old window of 20 matches held.
    for _ in range(22):
        answer = await alice.ask(room, "/recall where is the spare key")
        assert "flowerpot" in answer, answer


async def test_mention_is_a_question(bot: BotRunner, alice: TestUser) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    await alice.ask(room, "/remember the bins go out on Thursday")
    answer = await alice.ask(room, "memu: when do the bins go out?")
    assert "Thursday" in answer, answer
    # Every handled sync touches the heartbeat the container's health check reads.
    heartbeat = bot.cfg.heartbeat_file
    os.utime(heartbeat, (0, 0))
    await alice.ask(room, "/help")
    assert bot.bot is not None
    bot.bot.synced.clear()  # the next handled batch (a long poll at most) beats right after
    await asyncio.wait_for(bot.bot.synced.wait(), timeout=30)
    assert time.time() - os.stat(heartbeat).st_mtime < 60


async def test_no_answers_nobody_asked_for(bot: BotRunner, alice: TestUser) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    help_reply = await alice.ask(room, "/help")
    bot_event = next(e["event_id"] for e in reversed(await alice.events(room))
                     if e["sender"] == bot_id(bot) and e["content"]["body"] == help_reply)
    # As Element sends a reply: the replied-to sender in m.mentions, the reply relation.
    reply_to_bot = {"m.relates_to": {"m.in_reply_to": {"event_id": bot_event}},
                    "m.mentions": {"user_ids": [bot_id(bot)]}}
    quiet = [
        await alice.say(room, "thanks!", **reply_to_bot),
        await alice.say(room, "that's the one", **reply_to_bot),
        await alice.say(room, "see memu.local/admin for the updates"),
        await alice.say(room, "mail ada@memu.family about the memu box"),
        await alice.say(room, "memu is great"),
    ]
    # Asked by name, or in a reply that asks: answered (rooms are handled in order, so the
    # messages above were handled by the time these replies arrive).
    assert await alice.ask(room, "Memu, when do the bins go out?")
    assert await alice.ask(room, "where are the keys?", **reply_to_bot)
    assert not (await alice.replies(room, bot_id(bot))).keys() & set(quiet)


async def test_memory_is_scoped_to_the_room(
    bot: BotRunner, alice: TestUser, fake_ollama: FakeOllama
) -> None:
    family = await alice.room_with_bot(bot_id(bot))
    private = await alice.room_with_bot(bot_id(bot), is_direct=True)
    await alice.ask(private, "/remember the birthday present is a red bicycle")
    answer = await alice.ask(family, "/recall what is the birthday present")
    assert "bicycle" not in answer and "don't know" in answer, answer
    assert all("bicycle" not in json.dumps(r) for r in fake_ollama.requests)
    listing = await alice.ask(family, "/memories")
    assert "bicycle" not in listing
    assert "bicycle" in await alice.ask(private, "/recall birthday present")


async def test_forget_memories_and_pagination(bot: BotRunner, alice: TestUser) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    ids = []
    for i in range(12):
        reply = await alice.ask(room, f"/remember fact number {i} #n{i % 2}")
        ids.append(re.search(r"m\d+", reply).group(0))  # type: ignore[union-attr]
    first = await alice.ask(room, "/memories")
    assert first.startswith("12 memories") and "Page 1 of 2" in first and "fact number 11" in first
    assert "fact number 0" in await alice.ask(room, "/memories 2")
    tagged = await alice.ask(room, "/memories #n1")
    assert tagged.startswith("6 memories tagged #n1"), tagged
    assert "Forgotten" in await alice.ask(room, f"/forget {ids[0]}")
    assert "no memory" in await alice.ask(room, f"/forget {ids[0]}")
    assert (await alice.ask(room, "/memories")).startswith("11 memories")


async def test_export_uploads_json(bot: BotRunner, alice: TestUser) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    await alice.ask(room, "/remember grandma's number is 01234 567890 #family")
    assert "1 memories" in await alice.ask(room, "/export")
    ev = await alice.wait_for(room, lambda e: e["content"].get("msgtype") == "m.file",
                              what="exported file")
    resp = await alice.client.download(mxc=ev["content"]["url"])
    assert isinstance(resp, nio.MemoryDownloadResponse), resp
    doc = json.loads(resp.body)
    assert doc["memories"][0]["text"] == "grandma's number is 01234 567890 #family"
    assert doc["memories"][0]["tags"] == ["family"]


async def test_lists(bot: BotRunner, alice: TestUser) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    assert "(3 to get)" in await alice.ask(room, "/list add shopping milk, eggs, bread")
    shown = await alice.ask(room, "/list show shopping")
    assert shown == "shopping:\n1. milk\n2. eggs\n3. bread", shown
    assert "Ticked off milk" in await alice.ask(room, "/list done shopping milk")
    assert "Ticked off bread" in await alice.ask(room, "/list done Shopping 2")
    assert await alice.ask(room, "/list show shopping") == "shopping:\n1. eggs"
    assert "Lists: shopping (1)" in await alice.ask(room, "/list")
    assert "1 open items removed" in await alice.ask(room, "/list clear shopping")
    assert "no list called shopping" in await alice.ask(room, "/list show shopping")


async def _sync_token(bot: BotRunner, value: str | None = None) -> str:
    """The bot's stored sync token; with ``value``, set it first (the bot is stopped)."""
    async with await psycopg.AsyncConnection.connect(bot.cfg.database_url,
                                                     autocommit=True) as conn:
        if value is not None:
            await conn.execute("UPDATE sync_state SET value = %s WHERE key = 'next_batch'",
                               (value,))
        cur = await conn.execute("SELECT value FROM sync_state WHERE key = 'next_batch'")
        row = await cur.fetchone()
    assert row
    return str(row[0])


async def test_a_replayed_batch_changes_nothing_twice(bot: BotRunner, alice: TestUser) -> None:
    # The bot stops after the effects but before storing the token: a replay of the same
    # events (the token set back) must find every effect already there.
    room = await alice.room_with_bot(bot_id(bot))
    await alice.ask(room, "/list add chores sweep, dust")
    assert bot.bot and bot.bot.synced
    before = await _sync_token(bot)
    for text in ("/list add shopping milk, eggs", "/list done shopping 1",
                 "/list clear chores", "/remember the boiler code is 4321",
                 "/remind in 1 hour put the bins out"):
        await alice.ask(room, text)
    await bot.stop()
    await _sync_token(bot, before)
    await bot.start()
    assert await alice.ask(room, "/list show shopping") == "shopping:\n1. eggs"
    assert "no list called chores" in await alice.ask(room, "/list show chores")
    assert (await alice.ask(room, "/memories")).startswith("1 memories")
    assert (await alice.ask(room, "/reminders")).count("put the bins out") == 1


async def test_a_backlog_longer_than_one_sync_is_answered(
    bot_config: Config, alice: TestUser
) -> None:
    runner = BotRunner(bot_config.replace(away_after=1.0))
    await runner.start()
    try:
        room = await alice.room_with_bot(bot_id(runner))
        await alice.ask(room, "/help")
        await runner.stop()  # sent while the bot is down: more than the timeline limit of 50
        sent = [await alice.say(room, f"/list add backlog item {i:02d}") for i in range(60)]
        # Every one of them older than away_after when the bot is back, however fast it
        # starts (without the wait, a quick start answered the newest without the away note).
        await asyncio.sleep(1.5)
        await runner.start()
        last = await alice.ask(room, "/list show backlog", deadline=180)
        items = last.split("backlog:\n", 1)[1].splitlines()
        assert items == [f"{i + 1}. item {i:02d}" for i in range(60)], last
        replies = await alice.replies(room, bot_id(runner))
        assert all(len(replies.get(i, [])) == 1 for i in sent)  # every one answered, once
        assert all(replies[i][0]["content"]["body"].startswith(AWAY_NOTE) for i in sent)
        stamps = [replies[i][0]["origin_server_ts"] for i in sent]
        assert stamps == sorted(stamps)  # oldest first
    finally:
        await runner.stop()


async def test_a_slow_model_answer_holds_up_no_other_command(
    bot_config: Config, alice: TestUser, fake_ollama: FakeOllama
) -> None:
    # By structure, not by the clock: room A's model answer is held until released, and the
    # deadline on it is far beyond the test's, so only commands that do not wait for it can
    # be answered meanwhile.
    runner = BotRunner(bot_config.replace(llm_timeout=600.0))
    await runner.start()
    try:
        a = await alice.room_with_bot(bot_id(runner))
        b = await alice.room_with_bot(bot_id(runner))
        await alice.ask(a, "/remember the boiler code is 4321")
        fake_ollama.hold()
        recall = await alice.say(a, "/recall boiler code")
        assert await asyncio.to_thread(fake_ollama.wait_held, 60)
        # Neither room waits for it: not B, and not the commands after it in A.
        assert "/remember" in await alice.ask(b, "/help", deadline=60)
        assert "/remember" in await alice.ask(a, "/help", deadline=60)
        assert "(3 to get)" in await alice.ask(a, "/list add shopping milk, eggs, bread")
        assert recall not in await alice.replies(a, bot_id(runner))
        fake_ollama.release()
        answer = await alice.wait_for(a, lambda e: replied_to(e) == recall,
                                      what="the held answer")
        assert "4321" in answer["content"]["body"]
    finally:
        fake_ollama.release()
        await runner.stop()


async def test_model_down_or_slow_still_answers(
    bot: BotRunner, alice: TestUser, fake_ollama: FakeOllama
) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    await alice.ask(room, "/remember the boiler code is 4321")
    fake_ollama.down()
    answer = await alice.ask(room, "/recall boiler code")
    assert answer.startswith(UNAVAILABLE) and "the boiler code is 4321" in answer, answer
    fake_ollama.up()
    fake_ollama.slow(5)  # beyond llm_timeout=2
    answer = await alice.ask(room, "/recall boiler code")
    assert answer.startswith(UNAVAILABLE) and "4321" in answer, answer
    # A new box still downloading its model: the bot says so and still answers from facts.
    fake_ollama.up()
    fake_ollama.without_models()
    answer = await alice.ask(room, "/recall boiler code")
    assert answer.startswith(DOWNLOADING) and "4321" in answer, answer
    fake_ollama.up()


async def test_encrypted_room_gets_a_polite_explanation(bot: BotRunner, alice: TestUser) -> None:
    room = await alice.room_with_bot(bot_id(bot), encrypted=True)
    await alice.wait_for(room, lambda e: e["content"].get("body") == E2EE_NOTICE,
                         what="E2EE explanation")


async def test_a_room_that_turned_encrypted_gets_no_memories(
    bot: BotRunner, alice: TestUser
) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    await alice.ask(room, "/remember the boiler code is 4321")
    resp = await alice.client.room_put_state(
        room, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    assert isinstance(resp, nio.RoomPutStateResponse), resp
    # A client without encryption still sends plain text into the room.
    assert await alice.ask(room, "/recall boiler code") == ENCRYPTED_REFUSAL
    await bot.stop()
    await bot.start()  # a restarted bot has not seen the encryption event in a sync
    assert await alice.ask(room, "/memories") == ENCRYPTED_REFUSAL
    bodies = [e["content"].get("body", "") for e in await alice.events(room)
              if e["sender"] == bot_id(bot)]
    assert not [b for b in bodies[1:] if "4321" in b]  # only the /remember confirmation


async def test_bad_input_gets_helpful_replies(bot: BotRunner, alice: TestUser) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    assert "/help" in await alice.ask(room, "/frobnicate")
    assert "What should I remember" in await alice.ask(room, "/remember")
    assert "couldn't tell when" in await alice.ask(room, "/remind whenever you like")
    assert "in the past" in await alice.ask(room, "/remind yesterday 8am call mum")
    assert "too long" in await alice.ask(room, "/remember " + "x" * 3000)
    assert "not an id" in await alice.ask(room, "/forget banana")
    assert "/remember <fact>" in await alice.ask(room, "/help")


#: Arguments no command can use; with the commands below, through Matrix to the real
#: database: every one gets a reply that says what to change, never an apology.
NASTY = ["\x00", "milk\x00eggs", "9" * 30, "²", "-1", "%s %(x)s", "#\x00", "🎉" * 5,
         "page 99999999999999999999", "r99999999999999999", "m²"]
EVERY_COMMAND = ["/remember", "/recall", "/forget", "/memories", "/memories #tag",
                 "/list add shopping", "/list show", "/list done shopping", "/list clear",
                 "/remind", "/remind cancel", "/remind change r1", "/reminders", "/help"]


async def test_bad_input_is_not_an_outage(
    bot: BotRunner, alice: TestUser, caplog: pytest.LogCaptureFixture
) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    await alice.ask(room, "/list add shopping milk")
    sent = {await alice.say(room, f"{command} {args}"): f"{command} {args}"
            for command in EVERY_COMMAND for args in NASTY}
    await alice.ask(room, "/help", deadline=240)  # the room's messages are handled in order
    replies = await alice.replies(room, bot_id(bot), limit=1000)
    for event_id, text in sent.items():
        assert event_id in replies, f"no reply to {text!r}"
        body = replies[event_id][0]["content"]["body"]
        assert body not in (DB_APOLOGY, GENERIC_APOLOGY), (text, body)
    crashes = [r for r in caplog.records if r.exc_info and r.name.startswith("memu_")]
    assert not crashes, [r.getMessage() for r in crashes]


async def test_database_failure_apologises_and_keeps_serving(
    bot: BotRunner, alice: TestUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = await alice.room_with_bot(bot_id(bot))
    assert bot.bot and bot.bot.handler
    memory = bot.bot.handler.commands.memory

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(memory, "add", broken)
    assert await alice.ask(room, "/remember the car is in for service") == DB_APOLOGY
    monkeypatch.undo()
    assert "remembered as" in await alice.ask(room, "/remember the car is in for service")
