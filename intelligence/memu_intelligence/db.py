"""PostgreSQL access: the async connection pool, the small sync-state table, and the
applied-events record that makes an effect happen once per Matrix event (:func:`first_time`).

psycopg 3 in async mode with ``psycopg_pool.AsyncConnectionPool``; nothing here blocks the
event loop. Connections use autocommit outside explicit ``conn.transaction()`` blocks.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from memu_common import MemuError
from memu_intelligence.config import Config

log = logging.getLogger(__name__)

#: What a failed database call may raise while the bot serves (besides ``psycopg.Error``).
__all__ = ["PoolTimeout", "SyncState", "first_time", "open_pool", "set_outcome"]


async def open_pool(cfg: Config, *, wait_timeout: float = 30.0) -> AsyncConnectionPool:
    """Open the pool and wait until one connection works.

    Raises:
        MemuError: PostgreSQL did not accept a connection within ``wait_timeout`` seconds.
    """
    pool = AsyncConnectionPool(
        cfg.database_url,
        min_size=cfg.pool_min,
        max_size=cfg.pool_max,
        kwargs={"autocommit": True},
        timeout=10.0,
        open=False,
        name="memu-bot",
    )
    try:
        await pool.open(wait=True, timeout=wait_timeout)
    except PoolTimeout as e:
        await pool.close()
        raise MemuError(
            f"cannot connect to PostgreSQL within {wait_timeout:.0f}s",
            hint="check MEMU_BOT_DATABASE_URL and that the database container is up",
        ) from e
    return pool


class SyncState:
    """Key/value rows in ``sync_state``; holds the Matrix ``/sync`` ``next_batch`` token.

    Storing the token only after a batch has been handled gives at-least-once handling; the
    commands that change state are keyed by the Matrix event id, so a replayed batch after a
    crash does not store a memory or a reminder twice.
    """

    NEXT_BATCH = "next_batch"

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def get(self, key: str) -> str | None:
        """The stored value, or None."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT value FROM sync_state WHERE key = %s", (key,))
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (upsert)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """INSERT INTO sync_state (key, value) VALUES (%s, %s)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()""",
                (key, value),
            )


async def first_time(conn: AsyncConnection[Any], room_id: str, event_id: str | None,
                     outcome: str = "") -> str | None:
    """Record, inside the caller's transaction, that ``event_id``'s effect is applied.

    Returns None the first time (apply the effect; ``set_outcome`` may record its result),
    else the outcome recorded the first time (a replay: apply nothing). Without an event id
    (tools, tests) every call is a first time.
    """
    if event_id is None:
        return None
    cur = await conn.execute(
        """INSERT INTO applied_events (room_id, event_id, outcome) VALUES (%s, %s, %s)
           ON CONFLICT (room_id, event_id) DO NOTHING RETURNING 1""",
        (room_id, event_id, outcome),
    )
    if await cur.fetchone():
        return None
    cur = await conn.execute(
        "SELECT outcome FROM applied_events WHERE room_id = %s AND event_id = %s",
        (room_id, event_id),
    )
    row = await cur.fetchone()
    return str(row[0]) if row else ""


async def set_outcome(conn: AsyncConnection[Any], room_id: str, event_id: str | None,
                      outcome: str) -> None:
    """The result a replay of ``event_id`` will get back (same transaction as the effect)."""
    if event_id is not None:
        await conn.execute(
            "UPDATE applied_events SET outcome = %s WHERE room_id = %s AND event_id = %s",
            (outcome, room_id, event_id),
        )
