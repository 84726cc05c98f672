"""``memu-intelligence``: run the bot, or ``--version``, or ``--healthcheck``.

Exit status: 0 ok; 1 health check failed; 2 configuration error (message and hint on
stderr). ``--healthcheck`` asks the database and the homeserver, for a person at a shell; the
container's ``HEALTHCHECK`` reads the bot's heartbeat instead (image/containers.toml).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

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


async def serve(cfg: Config) -> None:
    """Run the bot until SIGTERM/SIGINT, then stop cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
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
        asyncio.run(serve(cfg))
    except MemuError as e:
        print(f"memu-intelligence: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
