"""Database schema as registered, numbered migrations with a stored schema version.

Each migration is an ``async def`` decorated with ``@migration(n, "what it adds")``;
``migrate()`` applies the ones newer than the stored version in order, each in its own
transaction together with its row in ``schema_version``, under an advisory lock so two
starting bots cannot race. Migrations never change once released: add a new number.

The ``vector`` extension (pgvector) is optional and not a numbered migration:
``enable_vector()`` runs at every start and adds the embedding column and its index when the
extension can be created, so a database that gains pgvector later starts using it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

Migration = Callable[[AsyncConnection], Awaitable[None]]
MIGRATIONS: dict[int, tuple[str, Migration]] = {}
_LOCK_ID = 0x6D656D75  # "memu": pg_advisory_xact_lock key shared by every bot instance


def migration(version: int, description: str) -> Callable[[Migration], Migration]:
    """Register ``fn`` as schema migration ``version`` (1, 2, 3, … without gaps)."""

    def register(fn: Migration) -> Migration:
        if version in MIGRATIONS:
            raise ValueError(f"migration {version} registered twice")
        MIGRATIONS[version] = (description, fn)
        return fn

    return register


@migration(1, "sync state and household memory with full-text search")
async def _v1(conn: AsyncConnection) -> None:
    await conn.execute(
        """
        CREATE TABLE sync_state (
            key text PRIMARY KEY,
            value text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    await conn.execute(
        """
        CREATE TABLE household_memory (
            id bigserial PRIMARY KEY,
            room_id text NOT NULL,
            author text NOT NULL,
            body text NOT NULL,
            tags text[] NOT NULL DEFAULT '{}',
            source_event_id text,
            created_at timestamptz NOT NULL DEFAULT now(),
            tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED
        )"""
    )
    await conn.execute(
        "CREATE UNIQUE INDEX household_memory_event ON household_memory (room_id, source_event_id)"
    )
    await conn.execute("CREATE INDEX household_memory_tsv ON household_memory USING gin (tsv)")
    await conn.execute("CREATE INDEX household_memory_room ON household_memory (room_id, id)")
    await conn.execute("CREATE INDEX household_memory_tags ON household_memory USING gin (tags)")


@migration(2, "shared lists and their items")
async def _v2(conn: AsyncConnection) -> None:
    await conn.execute(
        """
        CREATE TABLE shared_lists (
            id bigserial PRIMARY KEY,
            room_id text NOT NULL,
            name text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (room_id, name)
        )"""
    )
    await conn.execute(
        """
        CREATE TABLE shared_list_items (
            id bigserial PRIMARY KEY,
            list_id bigint NOT NULL REFERENCES shared_lists (id) ON DELETE CASCADE,
            text text NOT NULL,
            added_by text NOT NULL,
            added_at timestamptz NOT NULL DEFAULT now(),
            done_at timestamptz
        )"""
    )
    await conn.execute("CREATE INDEX shared_list_items_list ON shared_list_items (list_id, id)")


@migration(3, "reminders with a delivery state machine")
async def _v3(conn: AsyncConnection) -> None:
    await conn.execute(
        """
        CREATE TABLE reminders (
            id bigserial PRIMARY KEY,
            room_id text NOT NULL,
            author text NOT NULL,
            body text NOT NULL,
            due_at timestamptz NOT NULL,
            state text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sending', 'sent', 'cancelled')),
            attempts integer NOT NULL DEFAULT 0,
            claimed_at timestamptz,
            delivered_at timestamptz,
            source_event_id text,
            created_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    await conn.execute(
        "CREATE UNIQUE INDEX reminders_event ON reminders (room_id, source_event_id)"
    )
    await conn.execute(
        "CREATE INDEX reminders_due ON reminders (due_at) WHERE state IN ('pending', 'sending')"
    )


@migration(4, "reminder questions waiting for an answer")
async def _v4(conn: AsyncConnection) -> None:
    # One open question per person and room ("There is no 31 February. Which date?"): the
    # reminder text waits here, across restarts, until the answer alone completes it.
    await conn.execute(
        """
        CREATE TABLE reminder_questions (
            room_id text NOT NULL,
            author text NOT NULL,
            body text NOT NULL,
            question text NOT NULL,
            source_event_id text NOT NULL,
            asked_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (room_id, author)
        )"""
    )


@migration(5, "events whose effect is applied, for effects that are not idempotent")
async def _v5(conn: AsyncConnection) -> None:
    # A replayed event (the bot stopped after an effect, before storing its sync token) finds
    # its row here, written in the effect's own transaction, and changes nothing again.
    await conn.execute(
        """
        CREATE TABLE applied_events (
            room_id text NOT NULL,
            event_id text NOT NULL,
            outcome text NOT NULL DEFAULT '',
            applied_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (room_id, event_id)
        )"""
    )


async def schema_version(conn: AsyncConnection) -> int:
    """The stored schema version (0 for an empty database)."""
    cur = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(pool: AsyncConnectionPool, *, target: int | None = None) -> int:
    """Bring the schema up to ``target`` (default: the newest); return the resulting version.

    Raises:
        psycopg.Error: a migration failed; its transaction is rolled back and the stored
            version stays at the last migration that succeeded.
    """
    newest = max(MIGRATIONS)
    target = newest if target is None else target
    async with pool.connection() as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_version (
                       version integer PRIMARY KEY,
                       description text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
        current = await schema_version(conn)
        for version in sorted(v for v in MIGRATIONS if current < v <= target):
            description, fn = MIGRATIONS[version]
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                if await schema_version(conn) >= version:
                    continue  # another instance got here first
                log.info("schema migration %d: %s", version, description)
                await fn(conn)
                await conn.execute(
                    "INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                    (version, description),
                )
            current = version
    return current


async def enable_vector(pool: AsyncConnectionPool, dim: int) -> bool:
    """Try to turn on semantic search: ``vector`` extension, embedding column, HNSW index.

    Returns True when ``household_memory.embedding`` exists as ``vector(dim)``; False when the
    extension is not installed or not permitted (then recall uses full-text search alone), or
    when an existing column has another dimension (a different embedding model).
    """
    async with pool.connection() as conn:
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                await conn.execute(
                    f"ALTER TABLE household_memory ADD COLUMN IF NOT EXISTS embedding vector({dim})"
                )
                await conn.execute(
                    "CREATE INDEX IF NOT EXISTS household_memory_embedding ON household_memory"
                    " USING hnsw (embedding vector_cosine_ops)"
                )
        except psycopg.Error as e:
            log.info("semantic search off (pgvector unavailable: %s); full-text only", e)
            return False
        cur = await conn.execute(
            """SELECT format_type(atttypid, atttypmod) FROM pg_attribute
               WHERE attrelid = 'household_memory'::regclass AND attname = 'embedding'"""
        )
        row = await cur.fetchone()
    if not row or row[0] != f"vector({dim})":
        log.warning(
            "household_memory.embedding is %s but the embedding model gives vector(%d);"
            " semantic search off",
            row[0] if row else None,
            dim,
        )
        return False
    return True
