"""Helpers for the update tests: test builds of other versions, a release channel served
over HTTP on the host's loopback (the guest reaches it as 10.0.2.2), and the agent's
update API."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pexpect

from memu_dev.build import build, ensure_host, newest_input_mtime
from memu_dev.paths import REPO, image_path
from memu_dev.release import release
from memu_dev.vm import VM

TREES = Path(__file__).parent / "trees"


def ensure_build(version: str, *trees: str) -> Path:
    """Build ``version`` of the N100 image with extra test trees (tests/qemu/trees/<name>)
    when it is missing or older than its inputs; return the raw image."""
    img = image_path("n100", version)
    paths = [TREES / t for t in trees]
    newest = max([newest_input_mtime()] + [f.stat().st_mtime for t in paths
                                           for f in t.rglob("*")])
    if not img.exists() or img.stat().st_mtime < newest:
        ensure_host("n100")
        build("n100", version=version, extra_trees=paths)
    return img


class Channel:
    """A release channel directory served by a threaded HTTP server on 127.0.0.1.

    ``guest_base`` is the base URL as the guest sees it; the channel is ``stable``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.rmtree(root, ignore_errors=True)
        (root / "stable").mkdir(parents=True)
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def guest_base(self) -> str:
        return f"http://10.0.2.2:{self.port}/"

    @property
    def dir(self) -> Path:
        return self.root / "stable"

    def add(self, version: str) -> None:
        """Release a built version into this channel (artifacts + signed SHA256SUMS)."""
        release(version, "stable", self.root)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def channel(root: Path) -> Iterator[Channel]:
    """A served channel for the duration of a ``with`` block."""
    ch = Channel(root)
    try:
        yield ch
    finally:
        ch.close()


def api(vm: VM, method: str, path: str, body: dict[str, Any] | None = None,
        timeout: float = 30) -> tuple[int, dict[str, Any]]:
    """Call the agent's JSON API through the forwarded port; returns (status, JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(vm.url(path), data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read() or b"{}")


def update(vm: VM, action: str, **kw: str) -> tuple[int, dict[str, Any]]:
    """POST /api/update with an action."""
    return api(vm, "POST", "/api/update", {"action": action, **kw})


def drain(vm: VM, seconds: float) -> None:
    """Let the guest run, reading its console so QEMU never blocks on output."""
    with contextlib.suppress(pexpect.TIMEOUT):
        vm.child.expect(pexpect.TIMEOUT, timeout=seconds)


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


def labels(vm: VM) -> dict[int, str]:
    """GPT partition number -> label on the guest's disk (read from the GPT, not a cache)."""
    out = vm.sh("for p in /dev/nvme0n1p*; do "
                "echo \"${p##*p} $(blkid -p -s PART_ENTRY_NAME -o value $p)\"; done")
    result: dict[int, str] = {}
    for line in out.splitlines():
        number, _, name = line.strip().partition(" ")
        if number.isdigit():
            result[int(number)] = name.strip()
    return result


def boot_entries(vm: VM) -> list[str]:
    """UKI file names in the ESP's EFI/Linux."""
    return sorted(vm.sh("ls /boot/EFI/Linux/").split())


__all__ = ["REPO", "Channel", "api", "boot_entries", "channel", "drain", "ensure_build",
           "labels", "update", "wait_update", "wait_version"]
