"""The systemd watchdog ping, as an asyncio task: if the event loop stalls, pings stop and
systemd (``WatchdogSec=``) restarts the agent. See sd_watchdog_enabled(3)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from memu_agent.notify import Notifier

log = logging.getLogger(__name__)


class Watchdog:
    """Sends ``WATCHDOG=1`` every ``interval_s`` seconds from a task on the running loop.

    Args:
        notifier: where to send the pings.
        interval_s: seconds between pings (half of ``$WATCHDOG_USEC``); None disables it.
    """

    def __init__(self, notifier: Notifier, interval_s: float | None) -> None:
        self._notifier = notifier
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    @property
    def interval_s(self) -> float | None:
        """Seconds between pings, or None when the watchdog is off."""
        return self._interval_s

    async def _ping_forever(self, interval_s: float) -> None:
        while True:
            self._notifier.notify(WATCHDOG="1")
            await asyncio.sleep(interval_s)

    def start(self) -> None:
        """Start pinging (sends the first ping at once); a no-op when disabled or running."""
        if self._interval_s is None or self._task is not None:
            return
        log.debug("watchdog: pinging every %.3f s", self._interval_s)
        self._task = asyncio.get_running_loop().create_task(
            self._ping_forever(self._interval_s), name="memu-agent-watchdog"
        )

    async def stop(self) -> None:
        """Stop pinging and wait for the task to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
