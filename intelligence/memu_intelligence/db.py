"""PostgreSQL access: the async connection pool and the small sync-state table.

psycopg 3 in async mode with ``psycopg_pool.AsyncConnectionPool``; nothing here blocks the
event loop. Connections use autocommit outside explicit ``conn.transaction()`` blocks.
"""

from __future__ import annotations

import logging

from psycopg_pool import AsyncConnectionPool, PoolTimeout

from memu_common import MemuError
from memu_intelligence.config import Config

log = logging.getLogger(__name__)

#: What a failed database call may raise while the bot serves (besides ``psycopg.Error``).
__all__ = ["PoolTimeout", "SyncState", "open_pool"]


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
