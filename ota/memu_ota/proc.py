"""The one way memu_ota runs a command asynchronously, optionally listening for the
sd_notify datagrams it sends (the async sibling of :func:`memu_common.run`).

Protocol (sd_notify(3), https://systemd.io/NOTIFY_SOCKET/): the child finds an
``AF_UNIX``/``SOCK_DGRAM`` socket address in ``$NOTIFY_SOCKET`` and sends datagrams of
newline-separated ``KEY=VALUE`` lines. We bind such a socket, hand its path to the child,
and pass each parsed datagram to a callback as it arrives, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memu_common import MemuError

log = logging.getLogger(__name__)

NotifyCallback = Callable[[dict[str, str]], None]
_MAX_SUN_PATH = 107  # sockaddr_un.sun_path is 108 bytes including the NUL


def parse_notify(datagram: bytes) -> dict[str, str]:
    """One notify datagram as a dict (``b"A=1\\nB=x"`` → ``{"A": "1", "B": "x"}``); lines
    without ``=`` and undecodable bytes are dropped."""
    text = datagram.decode("utf-8", errors="replace")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@dataclass
class Completed:
    """A finished command: its exit status, output and notify datagrams (in order)."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    notify: list[dict[str, str]] = field(default_factory=list)

    def stderr_tail(self, lines: int = 8) -> str:
        """The last ``lines`` of stderr, for logs."""
        return "\n".join(self.stderr.strip().splitlines()[-lines:])


class NotifyListener:
    """A bound notify socket in ``directory`` that feeds datagrams to ``callback``.

    Use as an async context manager; ``address`` is the ``$NOTIFY_SOCKET`` value. A path
    too long for ``sun_path`` falls back to the abstract namespace.
    """

    def __init__(self, directory: Path, callback: NotifyCallback) -> None:
        self._callback = callback
        path = directory / f"notify-{uuid.uuid4().hex[:12]}"
        self._path: Path | None = path
        self.address = str(path)
        if len(os.fsencode(path)) > _MAX_SUN_PATH:
            self._path = None
            self.address = f"@memu-ota-{uuid.uuid4().hex}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    def _drain(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("notify socket: %s", e)
                return
            self._callback(parse_notify(data))

    async def __aenter__(self) -> NotifyListener:
        if self._path is not None:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._sock.bind(str(self._path))
        else:
            self._sock.bind("\0" + self.address[1:])
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._drain)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._drain()  # whatever arrived before the child exited
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()


async def run_async(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    time_limit_s: float | None = None,
    notify_dir: Path | None = None,
    on_notify: NotifyCallback | None = None,
) -> Completed:
    """Run one command (never through a shell) and collect its output; never checks the
    exit status (the caller explains failures).

    Args:
        argv: the command and its arguments.
        env: extra environment on top of ours.
        time_limit_s: seconds before the child is killed.
        notify_dir: when given, listen for sd_notify datagrams on a socket in this
            directory; the child gets ``$NOTIFY_SOCKET``, and :data:`NOTIFY_PLACEHOLDER`
            in ``argv`` is replaced by its address (for ``systemd-run --setenv=``).
        on_notify: called for each datagram as it arrives.

    Raises:
        MemuError: the command is missing or timed out.
    """
    cmd = [str(a) for a in argv]
    datagrams: list[dict[str, str]] = []

    def collect(msg: dict[str, str]) -> None:
        datagrams.append(msg)
        if on_notify is not None:
            on_notify(msg)

    async with contextlib.AsyncExitStack() as stack:
        child_env = dict(os.environ)
        child_env.update(env or {})
        if notify_dir is not None:
            listener = await stack.enter_async_context(NotifyListener(notify_dir, collect))
            child_env["NOTIFY_SOCKET"] = listener.address
            cmd = [a.replace(NOTIFY_PLACEHOLDER, listener.address) for a in cmd]
        log.debug("run: %s", shlex.join(cmd))
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=child_env,
            )
        except FileNotFoundError as e:
            raise MemuError(f"command not found: {cmd[0]}", hint="is it installed?") from e
        try:
            out, err = await asyncio.wait_for(proc.communicate(), time_limit_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise MemuError(f"command timed out after {time_limit_s}s: {shlex.join(cmd)}") from None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
            raise
    return Completed(
        argv=cmd,
        returncode=proc.returncode if proc.returncode is not None else -1,
        stdout=out.decode("utf-8", errors="replace"),
        stderr=err.decode("utf-8", errors="replace"),
        notify=datagrams,
    )


# In argv, replaced by the notify socket address (for ``systemd-run -E NOTIFY_SOCKET=…``).
NOTIFY_PLACEHOLDER = "@NOTIFY_SOCKET@"
