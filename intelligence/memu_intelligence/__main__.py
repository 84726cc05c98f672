"""``memu-intelligence``: run the bot, or ``--version``, or ``--healthcheck``.

Exit status: 0 ok; 1 health check failed; 2 configuration error (message and hint on
stderr). ``--healthcheck`` asks the database and the homeserver, for a person at a shell; the
container's ``HEALTHCHECK`` reads the bot's heartbeat instead (image/containers.toml).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TextIO

import aiohttp
import psycopg

from memu_common import MemuError
from memu_intelligence import __version__
from memu_intelligence.bot import Bot
from memu_intelligence.config import Config

log = logging.getLogger("memu_intelligence")


async def healthcheck(cfg: Config, *, deadline: float = 5.0) -> list[str]:
    """What is unhealthy (empty when healthy): PostgreSQL answers ``SELECT 1`` and the
    homeserver answers ``GET /_matrix/client/versions`` (spec: "API Standards")."""
    problems = []
    try:
        async with await psycopg.AsyncConnection.connect(
            cfg.database_url, connect_timeout=max(1, int(deadline))
        ) as conn:
            await conn.execute("SELECT 1")
    except (psycopg.Error, OSError) as e:
        problems.append(f"database: {e}")
    try:
        timeout = aiohttp.ClientTimeout(total=deadline)
        async with (
            aiohttp.ClientSession(timeout=timeout) as s,
            s.get(f"{cfg.homeserver}/_matrix/client/versions") as r,
        ):
            data = await r.json(content_type=None)
            if r.status != 200 or "versions" not in data:
                problems.append(f"homeserver: HTTP {r.status}")
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        problems.append(f"homeserver: {e or type(e).__name__}")
    return problems


#: Seconds a clean stop may take before the process exits anyway: under Docker's 10 s
#: between SIGTERM and SIGKILL, so the stack dump below reaches the log first.
STOP_GRACE_S = 8.0


class StopWatchdog:
    """Exit the process (``exit(1)``, by default ``os._exit``) when a clean stop, begun by
    :meth:`arm`, has not ended within ``grace`` seconds, after writing every thread's stack
    and every asyncio task's to ``out``: what held the stop up.

    Exiting early loses nothing: a command's effect and its reply are stored exactly once
    across kills (tests/intelligence/test_bot_kills.py), and the batch whose token was not
    stored is handled again after the restart."""

    def __init__(self, grace: float = STOP_GRACE_S, exit: Callable[[int], object] = os._exit,
                 out: TextIO = sys.stderr) -> None:
        self.grace = grace
        self._exit = exit
        self._out = out
        self._timer: threading.Timer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self) -> None:
        """Start the countdown (again calls do nothing)."""
        if self._timer is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
            self._timer = threading.Timer(self.grace, self._give_up)
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        """The stop ended: cancel the countdown."""
        if self._timer is not None:
            self._timer.cancel()

    def _give_up(self) -> None:
        log.error("the bot did not stop within %.0f s; exiting anyway. Where it was:",
                  self.grace)
        faulthandler.dump_traceback(file=self._out, all_threads=True)
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the set of tasks changed meanwhile
                for task in list(asyncio.all_tasks(self._loop)):
                    task.print_stack(file=self._out)
        self._out.flush()
        self._exit(1)


async def serve(cfg: Config, watchdog: StopWatchdog | None = None) -> None:
    """Run the bot until SIGTERM/SIGINT, then stop cleanly, within ``watchdog``'s grace."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    watchdog = watchdog or StopWatchdog()

    def on_signal() -> None:
        watchdog.arm()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal)
    async with Bot(cfg) as bot:
        task = bot.run_in_background()
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done() and not task.cancelled() and task.exception():
            raise task.exception()  # type: ignore[misc]
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="memu-intelligence", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"memu-intelligence {__version__}")
    parser.add_argument("--healthcheck", action="store_true",
                        help="exit 0 when the database and the homeserver answer, else 1")
    parser.add_argument("--debug", action="store_true", help="verbose logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:
        logging.getLogger("nio").setLevel(logging.WARNING)
    try:
        cfg = Config.from_env()
        if args.healthcheck:
            problems = asyncio.run(healthcheck(cfg))
            for p in problems:
                print(f"unhealthy: {p}", file=sys.stderr)
            return 1 if problems else 0
        watchdog = StopWatchdog()
        try:
            asyncio.run(serve(cfg, watchdog))
        finally:
            watchdog.disarm()
    except MemuError as e:
        print(f"memu-intelligence: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
