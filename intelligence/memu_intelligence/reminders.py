"""Reminders: storage and the scheduler that delivers each one exactly once.

Delivery is a small state machine on the ``reminders`` row::

    pending --claim--> sending --sent ok--> sent
       ^                  |
       +--send failed-----+      (cancel: pending -> cancelled)

1. *Claim* atomically: ``UPDATE … SET state='sending', claimed_at=now()
   WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING *`` takes the due rows, so two
   schedulers (or a restarted one racing an old one) never take the same row.
2. *Send* with a Matrix transaction id derived from the reminder id
   (``PUT /rooms/{room}/send/m.room.message/memu-reminder-{id}``; Matrix client-server spec,
   "Transaction identifiers": the homeserver treats a repeated txn id from the same device
   as the same request and returns the original event id).
3. *Mark* ``sent``.

A crash between 2 and 3 leaves the row in ``sending``. We chose never to lose a reminder:
on start-up the scheduler re-claims every ``sending`` row left by an earlier process (and
later ones after ``STALE_CLAIM``) and sends again with the same txn id, so Synapse
deduplicates the resend and the room still sees it once. (The alternative — mark first,
send second — cannot duplicate but silently drops a reminder on such a crash.) A failed
send returns the row to ``pending`` with a back-off, so a homeserver outage delays
reminders but does not drop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

STALE_CLAIM = dt.timedelta(minutes=2)
RETRY_AFTER = dt.timedelta(seconds=30)
#: How long a question about a reminder's time waits for its answer.
QUESTION_KEPT = dt.timedelta(days=1)
_COLUMNS = "id, room_id, author, body, due_at, state, attempts"

#: ``send(room_id, text, txn_id)``; raises on failure.
Sender = Callable[[str, str, str], Awaitable[None]]


@dataclass(frozen=True)
class Reminder:
    """One reminder; ``due_at`` is timezone-aware."""

    id: int
    room_id: str
    author: str
    body: str
    due_at: dt.datetime
    state: str
    attempts: int

    @property
    def short_id(self) -> str:
        """The id as shown to people: ``r7``."""
        return f"r{self.id}"

    @property
    def txn_id(self) -> str:
        """The Matrix transaction id every delivery attempt of this reminder uses."""
        return f"memu-reminder-{self.id}"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Reminder:
        """Build from a ``dict_row`` holding ``_COLUMNS``."""
        return cls(
            int(row["id"]), row["room_id"], row["author"], row["body"], row["due_at"],
            row["state"], int(row["attempts"]),
        )


@dataclass(frozen=True)
class PendingQuestion:
    """A reminder waiting for its time: ``body`` (may be ""), the ``question`` asked, and
    the Matrix event id of the ``/remind`` that asked it."""

    body: str
    question: str
    event_id: str


class ReminderStore:
    """Rows in ``reminders``, always scoped to a room except for the scheduler's claim."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def add(
        self, room_id: str, author: str, body: str, due_at: dt.datetime, *, event_id: str | None
    ) -> Reminder:
        """Store a pending reminder; idempotent per (room, Matrix event id). The author's open
        question in this room (:meth:`ask`) ends in the same transaction: a new reminder, or
        the answer that completes the question, replaces it."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "DELETE FROM reminder_questions WHERE room_id = %s AND author = %s",
                (room_id, author),
            )
            await cur.execute(
                f"""INSERT INTO reminders (room_id, author, body, due_at, source_event_id)
                    VALUES (%s, %s, %s, %s, %s)
                    ON CONFLICT (room_id, source_event_id) DO UPDATE SET room_id = excluded.room_id
                    RETURNING {_COLUMNS}""",
                (room_id, author, body, due_at, event_id),
            )
            row = await cur.fetchone()
        assert row is not None
        return Reminder.from_row(row)

    async def ask(self, room_id: str, author: str, body: str, question: str, *,
                  event_id: str) -> None:
        """Keep ``body`` waiting for the answer to ``question`` (one per author and room;
        a newer one replaces it)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """INSERT INTO reminder_questions (room_id, author, body, question,
                                                  source_event_id)
                   VALUES (%s, %s, %s, %s, %s)
                   ON CONFLICT (room_id, author) DO UPDATE
                   SET body = excluded.body, question = excluded.question,
                       source_event_id = excluded.source_event_id, asked_at = now()""",
                (room_id, author, body, question, event_id),
            )

    async def question(self, room_id: str, author: str,
                       max_age: dt.timedelta = QUESTION_KEPT) -> PendingQuestion | None:
        """The author's open question in this room, unless older than ``max_age``."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                """SELECT body, question, source_event_id FROM reminder_questions
                   WHERE room_id = %s AND author = %s AND asked_at > now() - %s""",
                (room_id, author, max_age),
            )
            row = await cur.fetchone()
        return PendingQuestion(row["body"], row["question"], row["source_event_id"]) \
            if row else None

    async def change(self, room_id: str, reminder_id: int, due_at: dt.datetime
                     ) -> Reminder | None:
        """Move a pending reminder of this room to ``due_at``; None if there is none."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"""UPDATE reminders SET due_at = %s
                    WHERE room_id = %s AND id = %s AND state = 'pending' RETURNING {_COLUMNS}""",
                (due_at, room_id, reminder_id),
            )
            row = await cur.fetchone()
        return Reminder.from_row(row) if row else None

    async def upcoming(self, room_id: str, limit: int = 20) -> list[Reminder]:
        """This room's reminders not yet delivered, soonest first."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"""SELECT {_COLUMNS} FROM reminders
                    WHERE room_id = %s AND state IN ('pending', 'sending')
                    ORDER BY due_at, id LIMIT %s""",
                (room_id, limit),
            )
            return [Reminder.from_row(r) for r in await cur.fetchall()]

    async def cancel(self, room_id: str, reminder_id: int) -> Reminder | None:
        """Cancel a pending reminder of this room; None if there is none (or it is sending)."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"""UPDATE reminders SET state = 'cancelled'
                    WHERE room_id = %s AND id = %s AND state = 'pending' RETURNING {_COLUMNS}""",
                (room_id, reminder_id),
            )
            row = await cur.fetchone()
        return Reminder.from_row(row) if row else None

    async def claim_due(self, *, reclaim_all_sending: bool, limit: int = 20) -> list[Reminder]:
        """Atomically move due ``pending`` rows (and abandoned ``sending`` rows) to ``sending``.

        ``reclaim_all_sending`` takes every ``sending`` row regardless of age: right for the
        first pass after start-up, when any such row was left by a process that died.
        """
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"""UPDATE reminders SET state = 'sending', claimed_at = now(),
                           attempts = attempts + 1
                    WHERE id IN (
                        SELECT id FROM reminders
                        WHERE (state = 'pending' AND due_at <= now())
                           OR (state = 'sending' AND (%(all)s OR claimed_at < now() - %(stale)s))
                        ORDER BY due_at, id LIMIT %(limit)s
                        FOR UPDATE SKIP LOCKED)
                    RETURNING {_COLUMNS}""",
                {"all": reclaim_all_sending, "stale": STALE_CLAIM, "limit": limit},
            )
            return sorted((Reminder.from_row(r) for r in await cur.fetchall()),
                          key=lambda r: (r.due_at, r.id))

    async def mark_sent(self, reminder_id: int) -> None:
        """``sending`` → ``sent``."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE reminders SET state = 'sent', delivered_at = now() WHERE id = %s",
                (reminder_id,),
            )

    async def release(self, reminder_id: int, retry_after: dt.timedelta = RETRY_AFTER) -> None:
        """``sending`` → ``pending`` again, due no sooner than ``retry_after`` from now."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """UPDATE reminders SET state = 'pending', claimed_at = NULL,
                          due_at = greatest(due_at, now() + %s)
                   WHERE id = %s AND state = 'sending'""",
                (retry_after, reminder_id),
            )

    async def next_due(self) -> dt.datetime | None:
        """When the earliest pending reminder falls due (any room), or None."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT min(due_at) FROM reminders WHERE state = 'pending'")
            row = await cur.fetchone()
        return row[0] if row else None


class ReminderScheduler:
    """Background task: sleeps until the next reminder is due, then claims, sends and marks.

    ``poke()`` wakes it early (a new reminder may be due sooner than it planned to sleep).
    ``start()`` creates the task, ``stop()`` cancels it and waits.
    """

    def __init__(self, store: ReminderStore, send: Sender, *, max_sleep: float = 30.0) -> None:
        self._store = store
        self._send = send
        self._max_sleep = max_sleep
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._first_pass = True

    def start(self) -> None:
        """Start delivering in the background."""
        self._task = asyncio.create_task(self._run(), name="memu-reminders")

    async def stop(self) -> None:
        """Stop delivering; an in-flight send is cancelled (and re-sent after restart)."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        """Re-check the schedule now."""
        self._wake.set()

    async def run_once(self) -> int:
        """Deliver everything due now; returns how many were sent."""
        batch = await self._store.claim_due(reclaim_all_sending=self._first_pass)
        self._first_pass = False
        sent = 0
        for reminder in batch:
            try:
                await self._send(reminder.room_id, _render(reminder), reminder.txn_id)
            except Exception:
                log.exception("delivering reminder %s failed; will retry", reminder.short_id)
                await self._store.release(reminder.id)
                continue
            await self._store.mark_sent(reminder.id)
            sent += 1
        return sent

    async def _run(self) -> None:
        while True:
            delay = self._max_sleep
            try:
                await self.run_once()
                nxt = await self._store.next_due()
                if nxt is not None:
                    delay = min(delay, (nxt - dt.datetime.now(dt.UTC)).total_seconds())
            except (psycopg.Error, PoolTimeout):
                log.exception("reminder scheduler: database error; retrying")
            self._wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)


def _render(reminder: Reminder) -> str:
    return f"⏰ Reminder for {reminder.author}: {reminder.body}"
