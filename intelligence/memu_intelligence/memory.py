"""Explicit household memory: facts the family told the bot, scoped to the room they were said in.

Every query takes a ``room_id`` and filters by it; there is no cross-room read, so what is
said in a private chat with the bot is never recalled in the family room.

Search is PostgreSQL full-text search (``to_tsvector('english', body)``, a GIN index and
``ts_rank_cd`` cover-density ranking) over an OR of the question's lexemes; for scripts
written without spaces (Chinese, Japanese, Thai…) the room's memories holding the most of
the question's character bigrams (:func:`bigrams`); plus — when the
``vector`` extension is on — cosine nearest neighbours of the question's embedding through
an HNSW index; both lists are fused with reciprocal rank fusion (``ranking.fuse``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from memu_intelligence.ranking import MIN_VECTOR_ONLY_SIMILARITY, fuse

_COLUMNS = "id, room_id, author, body, tags, created_at"
# plainto_tsquery ANDs the lexemes; a question rarely repeats every word of the fact, so
# we OR them and let ts_rank_cd reward memories that hold more of them, closer together.
# The 'simple' configuration only re-reads the already stemmed lexemes.
_OR_QUERY = "to_tsquery('simple', replace(plainto_tsquery('english', %(q)s)::text, '&', '|'))"
# Scripts written without spaces between words (Chinese, Japanese, Thai…): PostgreSQL's
# parser takes a whole run of them as one "word", so full-text search cannot find a fact
# by a word inside it. They are searched by character bigrams instead (the usual way to
# index CJK text), as substrings of the room's memories.
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff"
                       r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
                       r"\uf900-\ufaff]+")


def bigrams(text: str, most: int = 16) -> list[str]:
    """The character bigrams of ``text``'s runs of unspaced scripts (a run of one
    character is itself), first ``most``, without repeats: ``密码是`` → ``密码``, ``码是``."""
    grams: dict[str, None] = {}
    for run in _UNSPACED.findall(text):
        for gram in ([run] if len(run) == 1 else
                     (run[i:i + 2] for i in range(len(run) - 1))):
            grams.setdefault(gram, None)
    return list(grams)[:most]


@dataclass(frozen=True)
class Memory:
    """One remembered fact. ``created_at`` is timezone-aware (UTC from the database)."""

    id: int
    room_id: str
    author: str
    body: str
    tags: tuple[str, ...]
    created_at: dt.datetime

    @property
    def short_id(self) -> str:
        """The id as shown to people: ``m12``."""
        return f"m{self.id}"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Memory:
        """Build from a ``dict_row`` holding at least ``_COLUMNS``."""
        return cls(
            id=int(row["id"]),
            room_id=row["room_id"],
            author=row["author"],
            body=row["body"],
            tags=tuple(row["tags"] or ()),
            created_at=row["created_at"],
        )

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for ``/export``)."""
        return {
            "id": self.short_id,
            "author": self.author,
            "text": self.body,
            "tags": list(self.tags),
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class MemoryHit:
    """A search result: the memory and its fused score (higher is better)."""

    memory: Memory
    score: float


def vector_literal(vec: Sequence[float]) -> str:
    """pgvector's text input form, ``[0.1,0.2,…]``."""
    return "[" + ",".join(f"{x:.6g}" for x in vec) + "]"


class MemoryStore:
    """CRUD and search over ``household_memory``.

    Args:
        pool: the bot's connection pool.
        vector: True when ``migrations.enable_vector`` succeeded (embedding column exists).
    """

    def __init__(self, pool: AsyncConnectionPool, *, vector: bool) -> None:
        self._pool = pool
        self.vector = vector

    async def add(
        self,
        room_id: str,
        author: str,
        body: str,
        tags: Sequence[str],
        *,
        event_id: str | None = None,
        embedding: Sequence[float] | None = None,
    ) -> Memory:
        """Store a fact; idempotent per (room, Matrix event id), so a replayed sync is harmless."""
        emb = vector_literal(embedding) if (embedding is not None and self.vector) else None
        cols = "room_id, author, body, tags, source_event_id" + (", embedding" if emb else "")
        vals = "%s, %s, %s, %s, %s" + (", %s::vector" if emb else "")
        params: list[Any] = [room_id, author, body, list(tags), event_id]
        if emb:
            params.append(emb)
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"""INSERT INTO household_memory ({cols}) VALUES ({vals})
                    ON CONFLICT (room_id, source_event_id) DO UPDATE SET room_id = excluded.room_id
                    RETURNING {_COLUMNS}""",
                params,
            )
            row = await cur.fetchone()
        assert row is not None
        return Memory.from_row(row)

    async def forget(self, room_id: str, memory_id: int) -> Memory | None:
        """Delete one memory of this room; returns it, or None when there is no such id here."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"DELETE FROM household_memory WHERE room_id = %s AND id = %s RETURNING {_COLUMNS}",
                (room_id, memory_id),
            )
            row = await cur.fetchone()
        return Memory.from_row(row) if row else None

    async def page(
        self, room_id: str, *, tag: str | None = None, page: int = 1, per_page: int = 10
    ) -> tuple[list[Memory], int]:
        """One page (1-based) of this room's memories, newest first, and the total count."""
        where = "room_id = %(room)s" + (" AND tags @> ARRAY[%(tag)s]::text[]" if tag else "")
        params = {"room": room_id, "tag": tag, "limit": per_page,
                  "offset": (max(page, 1) - 1) * per_page}
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT count(*) AS n FROM household_memory WHERE {where}", params)
            total_row = await cur.fetchone()
            await cur.execute(
                f"""SELECT {_COLUMNS} FROM household_memory WHERE {where}
                    ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s""",
                params,
            )
            rows = await cur.fetchall()
        return [Memory.from_row(r) for r in rows], int(total_row["n"]) if total_row else 0

    async def all(self, room_id: str) -> list[Memory]:
        """Every memory of this room, oldest first (for ``/export``)."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {_COLUMNS} FROM household_memory WHERE room_id = %s ORDER BY id",
                (room_id,),
            )
            return [Memory.from_row(r) for r in await cur.fetchall()]

    async def search(
        self,
        room_id: str,
        query: str,
        *,
        embedding: Sequence[float] | None = None,
        limit: int = 5,
    ) -> list[MemoryHit]:
        """The memories of this room that best answer ``query``, best first.

        Full-text hits always take part; semantic hits only when the vector path is on and an
        ``embedding`` of the query is given (vector-only hits need
        ``MIN_VECTOR_ONLY_SIMILARITY``).
        """
        candidates = max(limit * 4, 20)
        params: dict[str, Any] = {"room": room_id, "q": query, "n": candidates}
        found: dict[int, Memory] = {}
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"""SELECT {_COLUMNS}, ts_rank_cd(tsv, query) AS rank
                    FROM household_memory, {_OR_QUERY} AS query
                    WHERE room_id = %(room)s AND tsv @@ query
                    ORDER BY rank DESC, id DESC LIMIT %(n)s""",
                params,
            )
            text_rows = await cur.fetchall()
            grams = bigrams(query)
            if grams:
                params["grams"] = grams
                params["likes"] = [f"%{g}%" for g in grams]
                await cur.execute(
                    f"""SELECT {_COLUMNS},
                               (SELECT count(*) FROM unnest(%(grams)s::text[]) AS g
                                WHERE strpos(body, g) > 0) AS hits
                        FROM household_memory
                        WHERE room_id = %(room)s AND body LIKE ANY(%(likes)s::text[])
                        ORDER BY hits DESC, id DESC LIMIT %(n)s""",
                    params,
                )
                seen = {int(r["id"]) for r in text_rows}
                text_rows += [r for r in await cur.fetchall() if int(r["id"]) not in seen]
            vec_rows: list[dict[str, Any]] = []
            if self.vector and embedding is not None:
                params["v"] = vector_literal(embedding)
                async with conn.transaction():
                    await cur.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                    await cur.execute(
                        f"""SELECT {_COLUMNS}, 1 - (embedding <=> %(v)s::vector) AS similarity
                            FROM household_memory
                            WHERE room_id = %(room)s AND embedding IS NOT NULL
                            ORDER BY embedding <=> %(v)s::vector LIMIT %(n)s""",
                        params,
                    )
                    vec_rows = await cur.fetchall()
        text_ids = [int(r["id"]) for r in text_rows]
        in_text = set(text_ids)
        vec_ids = [
            int(r["id"])
            for r in vec_rows
            if int(r["id"]) in in_text or float(r["similarity"]) >= MIN_VECTOR_ONLY_SIMILARITY
        ]
        for r in (*text_rows, *vec_rows):
            found.setdefault(int(r["id"]), Memory.from_row(r))
        return [MemoryHit(found[i], score) for i, score in fuse(text_ids, vec_ids)[:limit]]
