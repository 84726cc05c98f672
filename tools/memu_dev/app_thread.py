"""An aiohttp application served on 127.0.0.1 from its own event loop in a daemon thread,
for test servers that synchronous code (QEMU tests, benchmarks, urllib clients) talks to."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


class AppThread:
    """Serve ``app`` on a free port of 127.0.0.1 (``port``, ``url``) until :meth:`close`.

    The port is bound before the thread starts, so it is known at once. ``call`` runs a
    coroutine on the server's loop and returns its result (``timeout`` seconds at most)."""

    def __init__(self, app: web.Application, timeout: float = 30.0) -> None:
        self.timeout = timeout
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        self.runner = web.AppRunner(app, access_log=None)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.runner.setup())
        self.call(web.SockSite(self.runner, sock).start())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop; return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout)

    def close(self) -> None:
        """Stop serving and end the thread."""
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
