"""Work the agent repeats for as long as its web application runs (the tailnet address, the
assistant's chat session): one task per job, started with the app and cancelled with it
(aiohttp's ``cleanup_ctx``, https://docs.aiohttp.org/en/stable/web_advanced.html)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)


def repeat(app: web.Application, what: str, step: Callable[[], Awaitable[object]],
           wait_s: Callable[[], float]) -> None:
    """Run ``step`` while ``app`` runs, waiting ``wait_s()`` seconds after each run. An
    exception from ``step`` is logged (with ``what``, e.g. "checking the assistant's chat
    session") and does not end the repetition."""
    async def context(_app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    await step()
                except Exception:  # a surprise must not end the job for the agent's life
                    log.exception("%s", what)
                await asyncio.sleep(wait_s())

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(context)
