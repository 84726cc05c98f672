"""Shared lists (shopping, packing, …) per room: ``shared_lists`` and ``shared_list_items``.

A list springs into being on its first ``add``; items are ticked off (``done_at``) rather than
deleted, ``clear`` removes a whole list. Names are case-insensitive (stored lower-case).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from memu_intelligence.db import first_time, set_outcome


@dataclass(frozen=True)
class ListItem:
    """One item on a list; ``done_at`` is None while it is still to do."""

    id: int
    text: str
    added_by: str
    added_at: dt.datetime
    done_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ListItem:
        """Build from a ``dict_row`` of ``shared_list_items``."""
        return cls(int(row["id"]), row["text"], row["added_by"], row["added_at"], row["done_at"])


def normalise_name(name: str) -> str:
    """List names are compared lower-case with single spaces."""
    return " ".join(name.lower().split())


class ListStore:
    """Operations on one room's shared lists."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def add(self, room_id: str, name: str, items: Sequence[str], author: str, *,
                  event_id: str | None = None) -> int:
        """Add ``items`` to list ``name`` (created if new); returns the number of open items.
        Once per Matrix event id: a replay adds nothing."""
        name = normalise_name(name)
        async with self._pool.connection() as conn, conn.transaction():
            replay = await first_time(conn, room_id, event_id) is not None
            cur = await conn.execute(
                """INSERT INTO shared_lists (room_id, name) VALUES (%s, %s)
                   ON CONFLICT (room_id, name) DO UPDATE SET name = excluded.name
                   RETURNING id""",
                (room_id, name),
            )
            row = await cur.fetchone()
            assert row is not None
            list_id = int(row[0])
            if not replay:
                await cur.executemany(
                    "INSERT INTO shared_list_items (list_id, text, added_by) "
                    "VALUES (%s, %s, %s)",
                    [(list_id, item, author) for item in items],
                )
            cur = await conn.execute(
                "SELECT count(*) FROM shared_list_items WHERE list_id = %s AND done_at IS NULL",
                (list_id,),
            )
            count = await cur.fetchone()
        return int(count[0]) if count else 0

    async def show(self, room_id: str, name: str) -> list[ListItem] | None:
        """Open items of list ``name`` in the order added; None when there is no such list."""
        async with self._pool.connection() as conn:
            return await _open_items(conn, room_id, name)

    async def names(self, room_id: str) -> list[tuple[str, int]]:
        """This room's lists with their open-item counts, by name."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """SELECT l.name, count(i.id) FILTER (WHERE i.done_at IS NULL)
                   FROM shared_lists l LEFT JOIN shared_list_items i ON i.list_id = l.id
                   WHERE l.room_id = %s GROUP BY l.name ORDER BY l.name""",
                (room_id,),
            )
            return [(str(n), int(c)) for n, c in await cur.fetchall()]

    async def done(self, room_id: str, name: str, what: str, *,
                   event_id: str | None = None) -> ListItem | None:
        """Tick off one open item: by its position (``2``) or by text (exact, then prefix,
        case-insensitive). Returns the item, or None when nothing matched. Once per Matrix
        event id: a replay ticks nothing more and returns the item it ticked."""
        async with self._pool.connection() as conn, conn.transaction():
            before = await first_time(conn, room_id, event_id)
            if before is not None:
                return await self._item(conn, int(before)) if before else None
            match = _match(await _open_items(conn, room_id, name) or [], what)
            if match is not None:
                await conn.execute(
                    "UPDATE shared_list_items SET done_at = now() WHERE id = %s", (match.id,))
                await set_outcome(conn, room_id, event_id, str(match.id))
        return match

    async def _item(self, conn: AsyncConnection[Any], item_id: int) -> ListItem | None:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute("SELECT id, text, added_by, added_at, done_at FROM shared_list_items "
                          "WHERE id = %s", (item_id,))
        row = await cur.fetchone()
        return ListItem.from_row(row) if row else None

    async def clear(self, room_id: str, name: str, *, event_id: str | None = None
                    ) -> int | None:
        """Delete list ``name`` and its items; returns how many open items it had, or None.
        Once per Matrix event id: a replay deletes nothing (a list made again since stays)
        and returns what the first time returned."""
        async with self._pool.connection() as conn, conn.transaction():
            before = await first_time(conn, room_id, event_id)
            if before is not None:
                return int(before) if before else None
            cur = await conn.execute(
                """WITH gone AS (DELETE FROM shared_lists WHERE room_id = %s AND name = %s
                                 RETURNING id)
                   SELECT (SELECT count(*) FROM gone),
                          (SELECT count(*) FROM shared_list_items
                           WHERE list_id IN (SELECT id FROM gone) AND done_at IS NULL)""",
                (room_id, normalise_name(name)),
            )
            row = await cur.fetchone()
            cleared = int(row[1]) if row and row[0] else None
            await set_outcome(conn, room_id, event_id, "" if cleared is None else str(cleared))
        return cleared


async def _open_items(conn: AsyncConnection[Any], room_id: str, name: str
                      ) -> list[ListItem] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT id FROM shared_lists WHERE room_id = %s AND name = %s",
                      (room_id, normalise_name(name)))
    found = await cur.fetchone()
    if not found:
        return None
    await cur.execute(
        """SELECT id, text, added_by, added_at, done_at FROM shared_list_items
           WHERE list_id = %s AND done_at IS NULL ORDER BY id""",
        (found["id"],),
    )
    return [ListItem.from_row(r) for r in await cur.fetchall()]


def _match(items: Sequence[ListItem], what: str) -> ListItem | None:
    """The item ``what`` names: its position (``2``), else its text (exact, then prefix,
    case-insensitive)."""
    wanted = what.strip().lower()
    if wanted.isascii() and wanted.isdigit() and 1 <= int(wanted) <= len(items):
        return items[int(wanted) - 1]
    return next((i for i in items if i.text.lower() == wanted), None) or next(
        (i for i in items if i.text.lower().startswith(wanted)), None)
