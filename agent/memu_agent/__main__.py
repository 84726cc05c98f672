"""``memu-agent [--config PATH] [--debug]``: run the agent until SIGTERM or SIGINT.

Exit status: 0 after a clean stop, 1 when it cannot start (e.g. the port is taken).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Sequence

from memu_agent.config import AgentConfig, config_path, load_config
from memu_agent.logs import setup_logging
from memu_agent.server import AgentServer
from memu_common import MemuError

log = logging.getLogger("memu_agent")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="memu-agent", description=__doc__)
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML config file (default: $MEMU_AGENT_CONFIG, else /etc/memu/agent.toml)",
    )
    parser.add_argument("--debug", action="store_true", help="log debug messages and requests")
    return parser.parse_args(argv)


async def serve(config: AgentConfig, *, debug: bool = False) -> int:
    """Start the agent, wait for SIGTERM/SIGINT, stop it. Returns the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = AgentServer(config, access_log=debug)
    try:
        await server.start()
    except MemuError as e:
        log.error("%s", e)
        await server.stop()
        server.notifier.status(f"failed: {e.message}")
        return 1
    await stop.wait()
    log.info("stopping")
    await server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``memu-agent`` entry point."""
    args = parse_args(argv)
    setup_logging(debug=args.debug)
    path, explicit = config_path(args.config, os.environ)
    config, problems = load_config(path, explicit=explicit)
    for problem in problems:
        log.error("config: %s", problem)
    log.info("memu-agent starting (config %s)", path)
    return asyncio.run(serve(config, debug=args.debug))


if __name__ == "__main__":
    raise SystemExit(main())
