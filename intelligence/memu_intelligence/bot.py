"""The bot as one object: ``start()`` wires everything, ``run()`` syncs, ``stop()`` undoes.

Sync loop (Matrix client-server spec, "Syncing", ``GET /_matrix/client/v3/sync``):

- The ``next_batch`` token lives in PostgreSQL (``sync_state``) and is stored only after
  the batch was handled, so a restart neither replays handled commands nor skips new ones
  (and a crash mid-batch replays it, which the event-id keyed writes make harmless).
- The very first start has no token: one sync with an empty timeline gets a token and
  pending invites, so the bot does not act on the history it finds.
- Homeserver errors back off exponentially (1 s doubling to 60 s) and never end the loop.
- After every handled batch (its token stored) the heartbeat file, when configured, is
  touched: a bot whose homeserver or database stays away stops beating, and the container's
  health check (the file's age) says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import nio
from psycopg_pool import AsyncConnectionPool

from memu_intelligence import timeparse
from memu_intelligence.callbacks import SyncHandler
from memu_intelligence.commands import Commands
from memu_intelligence.config import Config
from memu_intelligence.db import SyncState, open_pool
from memu_intelligence.lists import ListStore
from memu_intelligence.llm import Llm
from memu_intelligence.matrix import Matrix
from memu_intelligence.memory import MemoryStore
from memu_intelligence.migrations import enable_vector, migrate
from memu_intelligence.recall import Recaller
from memu_intelligence.reminders import ReminderScheduler, ReminderStore

log = logging.getLogger(__name__)

#: Keep /sync small: enough timeline per room for a busy family chat between polls.
SYNC_FILTER: dict[str, Any] = {
    "room": {"timeline": {"limit": 50}, "state": {"lazy_load_members": True}},
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
}
FIRST_SYNC_FILTER: dict[str, Any] = {**SYNC_FILTER, "room": {"timeline": {"limit": 0}}}
MAX_BACKOFF = 60.0
SIGNED_OUT = ("signed out: the homeserver no longer accepts the assistant's access token "
              "(M_UNKNOWN_TOKEN); it needs a new one")


class Bot:
    """The running bot. Use ``async with Bot(cfg) as bot: await bot.run()``, or
    ``start()`` / ``run_in_background()`` / ``stop()`` in tests."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.pool: AsyncConnectionPool | None = None
        self.matrix: Matrix | None = None
        self.scheduler: ReminderScheduler | None = None
        self.handler: SyncHandler | None = None
        self.sync_state: SyncState | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.synced = asyncio.Event()

    async def start(self) -> None:
        """Open the database (migrating it), the Matrix client and the reminder scheduler.

        Raises:
            MemuError: the database is unreachable (see ``db.open_pool``).
        """
        self._stopping = False
        # dateparser's first call loads its data (seconds): now, while the database opens,
        # rather than inside the first reminder in a language our own grammar does not read.
        warm = asyncio.create_task(asyncio.to_thread(timeparse.warm_up))
        self.pool = await open_pool(self.cfg)
        version = await migrate(self.pool)
        vector = await enable_vector(self.pool, self.cfg.embed_dim)
        log.info("database schema v%d, semantic search %s", version, "on" if vector else "off")
        self.sync_state = SyncState(self.pool)
        self.matrix = Matrix(self.cfg)
        llm = Llm(self.cfg)
        memory = MemoryStore(self.pool, vector=vector)
        reminders = ReminderStore(self.pool)
        self.scheduler = ReminderScheduler(reminders, self._send_reminder,
                                           max_sleep=self.cfg.reminder_poll)
        commands = Commands(
            self.cfg, self.matrix, memory, ListStore(self.pool), reminders, self.scheduler,
            Recaller(self.cfg, memory, llm, self.matrix), llm,
        )
        self.handler = SyncHandler(self.cfg, self.matrix, commands)
        self.scheduler.start()
        await warm

    async def _send_reminder(self, room_id: str, text: str, txn_id: str) -> None:
        assert self.matrix is not None
        await self.matrix.send_notice(room_id, text, txn_id=txn_id)

    async def run(self) -> None:
        """Sync forever (until cancelled), handling each batch before storing its token."""
        assert self.matrix and self.handler and self.sync_state
        client = self.matrix.client
        since = await self.sync_state.get(SyncState.NEXT_BATCH)
        if since is None:
            resp = await self._sync_with_backoff(None, FIRST_SYNC_FILTER, poll_ms=0)
            await self.handler.handle(resp, timeline=False)
            since = resp.next_batch
            await self.sync_state.set(SyncState.NEXT_BATCH, since)
        self._beat()
        try:
            self.handler.display_name = await self.matrix.display_name()
        except Exception:  # cosmetic: mentions by display name only
            log.warning("could not read the bot's display name", exc_info=True)
        log.info("serving as %s on %s", self.cfg.user_id, client.homeserver)
        # Batches are handled by the rooms' lanes while the next sync runs; their tokens are
        # stored in order, each once its batch and every batch before it are handled.
        handled: asyncio.Queue[tuple[str, asyncio.Future[Any]]] = asyncio.Queue()
        committer = asyncio.create_task(self._commit_tokens(handled), name="memu-tokens")
        try:
            while True:
                resp = await self._sync_with_backoff(since, SYNC_FILTER,
                                                     poll_ms=self.cfg.sync_timeout_ms)
                if self._stopping:  # a sync that outlived its cancellation: do not handle it
                    raise asyncio.CancelledError
                handled.put_nowait((resp.next_batch,
                                    await self.handler.start_batch(resp, since=since)))
                since = resp.next_batch
                self._beat()
        finally:
            await cancel_and_wait(committer)
            await self.handler.close()

    async def _commit_tokens(self, handled: asyncio.Queue[tuple[str, asyncio.Future[Any]]]
                             ) -> None:
        while True:
            token, done = await handled.get()
            await done
            await self._store_token(token)
            self.synced.set()

    def _problem(self, text: str | None) -> None:
        """Say (``text``) or clear (None) what keeps the bot from working, in
        ``<heartbeat_file>.problem``, which the container's health check reports."""
        if not self.cfg.heartbeat_file:
            return
        path = self.cfg.heartbeat_file + ".problem"
        try:
            if text is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            elif not os.path.exists(path):
                log.error("%s", text)
                with open(path, "w") as f:
                    f.write(text + "\n")
        except OSError as e:
            log.warning("cannot write %s: %s", path, e)

    def _beat(self) -> None:
        path = self.cfg.heartbeat_file
        if not path:
            return
        try:
            with open(path, "a"):
                os.utime(path)
        except OSError as e:  # the health check will say so; the bot itself still works
            log.warning("cannot touch the heartbeat file %s: %s", path, e)

    async def _store_token(self, token: str) -> None:
        assert self.sync_state
        delay = 1.0
        while True:
            try:
                await self.sync_state.set(SyncState.NEXT_BATCH, token)
                return
            except Exception:
                log.exception("cannot store the sync token; retrying in %.0fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    async def _sync_with_backoff(
        self, since: str | None, sync_filter: dict[str, Any], *, poll_ms: int
    ) -> nio.SyncResponse:
        assert self.matrix
        delay = 1.0
        while True:
            try:
                resp = await self.matrix.client.sync(
                    timeout=poll_ms, since=since, sync_filter=sync_filter, full_state=False
                )
            except Exception as e:  # network errors, timeouts, bad JSON
                resp = e
            if isinstance(resp, nio.SyncResponse):
                self._problem(None)
                return resp
            if self._stopping:
                raise asyncio.CancelledError
            if getattr(resp, "status_code", None) == "M_UNKNOWN_TOKEN":
                self._problem(SIGNED_OUT)
            log.warning("sync failed (%s); retrying in %.0fs", resp, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def run_in_background(self) -> asyncio.Task[None]:
        """Start ``run()`` as a task (tests; ``stop()`` cancels it)."""
        self._task = asyncio.create_task(self.run(), name="memu-sync")
        return self._task

    async def stop(self) -> None:
        """Undo ``start()`` in reverse order: sync task, scheduler, Matrix client, pool.

        The sync task also checks ``_stopping`` after every sync, so a batch that arrives
        after the stop began is never handled (its token is not stored: the next start
        handles it), even when the cancellation was swallowed (:func:`cancel_and_wait`)."""
        self._stopping = True
        if self._task:
            await cancel_and_wait(self._task)
            self._task = None
        if self.scheduler:
            await self.scheduler.stop()
        if self.matrix:
            await self.matrix.close()
        if self.pool:
            await self.pool.close()

    async def __aenter__(self) -> Bot:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def cancel_and_wait(task: asyncio.Task[Any], every: float = 1.0) -> None:
    """Cancel ``task`` and wait until it ended, cancelling it again every ``every`` seconds.

    Once is not always enough: a cancellation that races a library's own timeout can be
    swallowed (``asyncio.wait_for`` before Python 3.12, bpo-42130), and the task then syncs
    on as if nothing had happened. Seen in the kill tests: the sync task stayed "cancelling"
    until the stop watchdog ended the process."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    await asyncio.gather(task, return_exceptions=True)
