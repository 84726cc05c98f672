"""The bot's storage against a real PostgreSQL (with pgvector): migrations, search, reminders."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from bot_matrix import TestUser
from psycopg_pool import AsyncConnectionPool

from memu_dev.fake_ollama import embed_text
from memu_intelligence.__main__ import healthcheck, main
from memu_intelligence.config import Config
from memu_intelligence.lists import ListStore
from memu_intelligence.matrix import Matrix
from memu_intelligence.memory import MemoryStore
from memu_intelligence.migrations import MIGRATIONS, enable_vector, migrate, schema_version
from memu_intelligence.reminders import ReminderScheduler, ReminderStore

pytestmark = pytest.mark.services
ROOM, OTHER = "!family:memu.test", "!private:memu.test"


async def _open(url: str) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(url, min_size=1, max_size=4, open=False,
                               kwargs={"autocommit": True})
    await pool.open(wait=True, timeout=10)
    return pool


async def test_migrations_on_empty_database(database_url: str) -> None:
    pool = await _open(database_url)
    try:
        assert await migrate(pool) == max(MIGRATIONS) == 5
        assert await migrate(pool) == 5  # idempotent
        async with pool.connection() as conn:
            assert await schema_version(conn) == 5
            cur = await conn.execute("SELECT version FROM schema_version ORDER BY version")
            assert [r[0] for r in await cur.fetchall()] == [1, 2, 3, 4, 5]
            for table in ("household_memory", "shared_lists", "shared_list_items", "reminders",
                          "sync_state", "reminder_questions", "applied_events"):
                cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
                assert (await cur.fetchone()) == (True,), table
    finally:
        await pool.close()


async def test_migrations_upgrade_an_older_schema_keeping_data(database_url: str) -> None:
    pool = await _open(database_url)
    try:
        assert await migrate(pool, target=1) == 1
        old = MemoryStore(pool, vector=False)
        kept = await old.add(ROOM, "@alice:memu.test", "the wifi password is hunter2", ["home"])
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT to_regclass('reminders') IS NULL")
            assert (await cur.fetchone()) == (True,)
        assert await migrate(pool) == 5
        hits = await MemoryStore(pool, vector=False).search(ROOM, "wifi password")
        assert [h.memory.id for h in hits] == [kept.id]
        assert await ListStore(pool).add(ROOM, "shopping", ["milk"], "@alice:memu.test") == 1
    finally:
        await pool.close()


async def test_vector_extension_and_dimension_check(pool: AsyncConnectionPool) -> None:
    assert await enable_vector(pool, 64) is True
    assert await enable_vector(pool, 64) is True  # every start runs it
    assert await enable_vector(pool, 32) is False  # another model's size: full-text only


async def test_full_text_search_ranks_and_scopes(pool: AsyncConnectionPool) -> None:
    store = MemoryStore(pool, vector=False)
    both = await store.add(ROOM, "@a:x", "The wifi password is hunter2 #home", ["home"])
    one = await store.add(ROOM, "@a:x", "The router is behind the wifi extender", [])
    await store.add(ROOM, "@a:x", "Bins go out on Thursday", [])
    await store.add(OTHER, "@a:x", "the wifi password in the office is swordfish", [])
    hits = await store.search(ROOM, "where is the wifi password?")
    assert [h.memory.id for h in hits] == [both.id, one.id]
    assert await store.search(ROOM, "what is the and") == []  # only stop words
    assert [h.memory.body for h in await store.search(OTHER, "wifi password")] == [
        "the wifi password in the office is swordfish"]


async def test_scripts_written_without_spaces_are_found(pool: AsyncConnectionPool) -> None:
    store = MemoryStore(pool, vector=False)
    for body in ("我家的wifi密码是hunter2", "鍵は青い植木鉢の下にあります",
                 "รหัสไวไฟคือ hunter2", "the bins go out on Thursday"):
        await store.add(ROOM, "@a:x", body, [], event_id=None)
    await store.add(OTHER, "@a:x", "另一个房间的密码", [], event_id=None)
    assert [h.memory.body for h in await store.search(ROOM, "密码是什么\uff1f")] == [
        "我家的wifi密码是hunter2"]
    assert [h.memory.body for h in await store.search(ROOM, "鍵はどこ")] == [
        "鍵は青い植木鉢の下にあります"]
    assert [h.memory.body for h in await store.search(ROOM, "รหัสไวไฟ")] == [
        "รหัสไวไฟคือ hunter2"]
    assert await store.search(ROOM, "天气") == []


async def test_semantic_search_with_pgvector(pool: AsyncConnectionPool) -> None:
    assert await enable_vector(pool, 64)
    store = MemoryStore(pool, vector=True)
    fact = "spare key under the blue flowerpot"
    near = await store.add(ROOM, "@a:x", fact, [], embedding=embed_text(fact, 64))
    await store.add(ROOM, "@a:x", "dentist on Tuesday", [],
                    embedding=embed_text("dentist on Tuesday", 64))
    await store.add(OTHER, "@a:x", fact, [], embedding=embed_text(fact, 64))
    # No lexeme in common with the stored text, but the (given) embedding is the fact's:
    hits = await store.search(ROOM, "zzz", embedding=embed_text(fact, 64))
    assert [h.memory.id for h in hits] == [near.id]
    # An unrelated embedding and no words in common: nothing, not "the nearest anything".
    assert await store.search(ROOM, "zzz", embedding=embed_text("quantum physics", 64)) == []
    # Both paths agree: the fused result puts the fact first.
    hits = await store.search(ROOM, "blue flowerpot", embedding=embed_text("blue flowerpot", 64))
    assert hits[0].memory.id == near.id


async def test_replayed_event_is_stored_once(pool: AsyncConnectionPool) -> None:
    store = MemoryStore(pool, vector=False)
    a = await store.add(ROOM, "@a:x", "fact", [], event_id="$ev1")
    b = await store.add(ROOM, "@a:x", "fact", [], event_id="$ev1")
    assert a.id == b.id
    reminders = ReminderStore(pool)
    due = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    r1 = await reminders.add(ROOM, "@a:x", "x", due, event_id="$ev2")
    r2 = await reminders.add(ROOM, "@a:x", "x", due, event_id="$ev2")
    assert r1.id == r2.id and len(await reminders.upcoming(ROOM)) == 1


async def test_claims_are_atomic(pool: AsyncConnectionPool) -> None:
    store = ReminderStore(pool)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    ids = {(await store.add(ROOM, "@a:x", f"r{i}", past, event_id=None)).id for i in range(30)}
    batches = await asyncio.gather(*(store.claim_due(reclaim_all_sending=False, limit=50)
                                     for _ in range(4)))
    claimed = [r.id for b in batches for r in b]
    assert sorted(claimed) == sorted(ids)  # every due row exactly once


async def test_crash_between_send_and_mark_is_deduplicated(
    pool: AsyncConnectionPool, bot_config: Config, alice: TestUser
) -> None:
    room = await alice.create_room([bot_config.user_id])
    first = Matrix(bot_config)
    assert await first.join(room)
    store = ReminderStore(pool)
    await store.add(room, "@alice:memu.test", "feed the cat", dt.datetime.now(dt.UTC),
                    event_id=None)
    # Process 1 claims and sends, then "dies" before marking the row sent.
    [claimed] = await store.claim_due(reclaim_all_sending=False)
    await first.send_notice(room, "⏰ Reminder for @alice:memu.test: feed the cat",
                            txn_id=claimed.txn_id)
    await first.close()
    # Process 2 starts, re-claims the abandoned row and sends it again with the same txn id.
    second = Matrix(bot_config)

    async def send(room_id: str, text: str, txn_id: str) -> None:
        await second.send_notice(room_id, text, txn_id=txn_id)

    assert await ReminderScheduler(store, send).run_once() == 1
    await second.close()
    events = await alice.events(room)
    assert sum("feed the cat" in e["content"].get("body", "") for e in events) == 1
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT state, attempts FROM reminders")
        assert await cur.fetchone() == ("sent", 2)


async def test_failed_send_goes_back_to_pending(pool: AsyncConnectionPool) -> None:
    store = ReminderStore(pool)
    await store.add(ROOM, "@a:x", "x", dt.datetime.now(dt.UTC), event_id=None)

    async def fail(room_id: str, text: str, txn_id: str) -> None:
        raise ConnectionError("homeserver down")

    assert await ReminderScheduler(store, fail).run_once() == 0
    [pending] = await store.upcoming(ROOM)
    assert pending.state == "pending" and pending.due_at > dt.datetime.now(dt.UTC)


async def test_healthcheck(bot_config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await healthcheck(bot_config) == []
    bad_db = bot_config.replace(database_url="host=127.0.0.1 port=1 user=x dbname=x")
    assert [p.split(":")[0] for p in await healthcheck(bad_db)] == ["database"]
    bad_hs = bot_config.replace(homeserver="http://127.0.0.1:1")
    assert [p.split(":")[0] for p in await healthcheck(bad_hs, deadline=2)] == ["homeserver"]
    env = {"MEMU_BOT_HOMESERVER": bot_config.homeserver, "MEMU_BOT_USER_ID": bot_config.user_id,
           "MEMU_BOT_ACCESS_TOKEN": "x", "MEMU_BOT_DATABASE_URL": bot_config.database_url}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert await asyncio.to_thread(main, ["--healthcheck"]) == 0

