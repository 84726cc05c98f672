"""Serving a release channel to a QEMU guest and driving the agent's update API from the
host: used by the update tests and `just bench-ota`.

The channel is served by an HTTP server on 127.0.0.1 that answers byte ranges; QEMU's user
network shows the host to the guest as 10.0.2.2. The agent API is reached through the VM's
forwarded port.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from memu_dev.app_thread import AppThread
from memu_dev.paths import DEFAULT_BOARD
from memu_dev.release import release
from memu_dev.vm import VM


class Channel:
    """A release channel directory served over HTTP on 127.0.0.1 by aiohttp's static files
    (which answer byte ranges, as a CDN does: delta updates fetch ranges), in a thread.

    ``guest_base`` is the base URL as the guest sees it; the channel is ``stable``.
    ``served`` counts the body bytes of every GET answered (ranges as their length), what a
    device downloaded; a benchmark sets it back to 0 between measurements.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.served = 0
        shutil.rmtree(root, ignore_errors=True)
        (root / "stable").mkdir(parents=True)
        app = web.Application()
        app.router.add_static("/", root)
        app.on_response_prepare.append(self._count)
        self.server = AppThread(app)
        self.port = self.server.port

    async def _count(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.method == "GET" and response.content_length:
            self.served += response.content_length

    @property
    def guest_base(self) -> str:
        return f"http://10.0.2.2:{self.port}/"

    @property
    def dir(self) -> Path:
        return self.root / "stable"

    def add(self, version: str, *, delta: bool = False, board: str = DEFAULT_BOARD) -> None:
        """Release ``board``'s build of a version into this channel (artifacts + signed
        SHA256SUMS); with ``delta``, also its delta material (release.release)."""
        release(version, "stable", self.root, board, delta=delta)

    def close(self) -> None:
        self.server.close()


@contextlib.contextmanager
def channel(root: Path) -> Iterator[Channel]:
    """A served channel for the duration of a ``with`` block."""
    ch = Channel(root)
    try:
        yield ch
    finally:
        ch.close()


def api(vm: VM, method: str, path: str, body: dict[str, Any] | None = None,
        timeout: float = 30, headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, Any]]:
    """Call the agent's JSON API through the forwarded port; returns (status, JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(vm.url(path), data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read() or b"{}")


def setup_code(vm: VM) -> dict[str, str]:
    """The header that proves the guest's setup code (read through the root shell), as the
    person in front of the box would type it from its screen."""
    return {"X-Memu-Setup-Code": vm.sh("cat /var/lib/memu/setup-token").strip()}


def admin_credentials(vm: VM) -> dict[str, str]:
    """What a script proves to the guest's admin routes: the API token setup made
    (``Authorization: Bearer``), or, while the box is not set up, the setup code."""
    token = vm.sh("cat /var/lib/memu/api-token 2>/dev/null || true").strip()
    return {"Authorization": f"Bearer {token}"} if token else setup_code(vm)


def update(vm: VM, action: str, **kw: str) -> tuple[int, dict[str, Any]]:
    """POST /api/update with an action, as a script (:func:`admin_credentials`)."""
    return api(vm, "POST", "/api/update", {"action": action, **kw},
               headers=admin_credentials(vm))


def drain(vm: VM, seconds: float) -> None:
    """Let the guest run, reading its console so QEMU never blocks on output
    (:meth:`memu_dev.vm.VM.drain`)."""
    vm.drain(seconds)


def wait_update(vm: VM, states: set[str], timeout: float,
                seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Poll GET /api/update until its state is one of ``states``; return that snapshot.
    Every snapshot polled is appended to ``seen`` when given."""
    deadline = time.monotonic() + timeout
    snap: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            _, snap = api(vm, "GET", "/api/update", timeout=10)
            if seen is not None:
                seen.append(snap)
            if snap.get("state") in states:
                return snap
        drain(vm, 2)
    raise AssertionError(f"update state never reached {states} in {timeout}s; last: {snap}"
                         f" (serial log: {vm.serial_log})")


def wait_version(vm: VM, version: str, timeout: float) -> dict[str, Any]:
    """Poll /api/status until the guest runs ``version``; return the status."""
    deadline = time.monotonic() + timeout
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            _, st = api(vm, "GET", "/api/status", timeout=5)
            if st.get("version") == version:
                return st
        drain(vm, 3)
    raise AssertionError(f"guest never ran {version} within {timeout}s; last status: {st}"
                         f" (serial log: {vm.serial_log})")
