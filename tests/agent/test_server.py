"""AgentServer in-process: READY only once the port accepts, STATUS, watchdog, STOPPING."""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import threading
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
from agent_fixtures import NotifySocket
from aiohttp import web, web_runner

from memu_agent import server as server_module
from memu_agent.config import AgentConfig
from memu_agent.console import ISSUE_FILE
from memu_agent.facts import HostPaths
from memu_agent.server import AgentServer
from memu_common import MemuError
from memu_firstboot.setup_token import TOKEN_FILE
from memu_firstboot.state import SETUP_DONE_MARKER


def port_of(status: str) -> int:
    match = re.search(r"on port (\d+)", status)
    assert match, status
    return int(match.group(1))


class ReadyProbe(threading.Thread):
    """Reads notifications in a thread; when READY=1 arrives, connects to the port named in
    its STATUS at that very moment (the agent has not been told anything else yet)."""

    def __init__(self, ns: NotifySocket) -> None:
        super().__init__(daemon=True)
        self.ns = ns
        self.messages: list[dict[str, str]] = []
        self.connected_at_ready: bool | None = None

    def run(self) -> None:
        for msg in self.ns.recv_until("READY", timeout=10):
            self.messages.append(msg)
        status = self.messages[-1]["STATUS"]
        try:
            socket.create_connection(("127.0.0.1", port_of(status)), timeout=2).close()
            self.connected_at_ready = True
        except OSError:
            self.connected_at_ready = False


async def test_ready_after_listening_then_stopping(
    notify_socket: NotifySocket, config: AgentConfig, host: HostPaths
) -> None:
    probe = ReadyProbe(notify_socket)
    probe.start()
    server = AgentServer(config, env={"NOTIFY_SOCKET": notify_socket.address}, paths=host)
    await server.start()
    await asyncio.to_thread(probe.join, 10)

    assert probe.messages[0] == {"STATUS": "starting"}
    ready = probe.messages[-1]
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("serving first-boot page on port ")
    assert port_of(ready["STATUS"]) == server.ports[0]
    assert probe.connected_at_ready is True
    assert not any("WATCHDOG" in m for m in probe.messages)  # not asked for: none sent

    await server.stop()
    assert notify_socket.recv() == {"STOPPING": "1", "STATUS": "stopping"}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.ports[0]), timeout=1).close()


async def test_watchdog_pings_while_running_and_stop_after(
    notify_socket: NotifySocket, config: AgentConfig, host: HostPaths
) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "100000"}  # ping every 50 ms
    server = AgentServer(config, env=env, paths=host)
    await server.start()
    await asyncio.sleep(0.4)
    await server.stop()
    messages = []
    try:
        while True:
            messages.append(notify_socket.recv(timeout=0.2))
    except TimeoutError:
        pass
    pings = [m for m in messages if m == {"WATCHDOG": "1"}]
    assert len(pings) >= 5
    assert messages[-1] == {"STOPPING": "1", "STATUS": "stopping"}
    await asyncio.sleep(0.2)
    with pytest.raises(TimeoutError):
        notify_socket.recv(timeout=0.1)  # no pings after stop


async def test_watchdog_off_by_config(
    notify_socket: NotifySocket, config: AgentConfig, host: HostPaths
) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "100000"}
    server = AgentServer(replace(config, watchdog=False), env=env, paths=host)
    await server.start()
    await asyncio.sleep(0.2)
    await server.stop()
    messages = notify_socket.recv_until("STOPPING")
    assert not any("WATCHDOG" in m for m in messages)


async def test_start_writes_token_and_greeting(config: AgentConfig, host: HostPaths) -> None:
    server = AgentServer(config, env={}, paths=host)
    await server.start()
    await server.stop()
    token = (config.state_dir / TOKEN_FILE).read_text().strip()
    issue = (config.issue_dir / ISSUE_FILE).read_text()
    assert f"Setup code: {token}" in issue


async def test_set_up_box_says_so(
    notify_socket: NotifySocket, config: AgentConfig, host: HostPaths
) -> None:
    config.state_dir.mkdir(mode=0o700)
    (config.state_dir / SETUP_DONE_MARKER).touch()
    server = AgentServer(config, env={"NOTIFY_SOCKET": notify_socket.address}, paths=host)
    await server.start()
    await server.stop()
    ready = notify_socket.recv_until("READY")[-1]
    assert ready["STATUS"].startswith("serving status page on port ")
    assert "Setup code" not in (config.issue_dir / ISSUE_FILE).read_text()
    assert not (config.state_dir / TOKEN_FILE).exists()  # no code is made after setup


async def test_greeting_loses_the_code_when_setup_ends(
        config: AgentConfig, host: HostPaths) -> None:
    """The apply deletes the code and marks the box set up; when it ends, the agent
    redraws the console (a failed apply leaves the code shown)."""
    server = AgentServer(config, env={}, paths=host)
    await server.start()
    try:
        issue = config.issue_dir / ISSUE_FILE
        await server._setup_ended(1)  # failed: still not set up
        assert "Setup code" in issue.read_text()
        (config.state_dir / TOKEN_FILE).unlink()
        (config.state_dir / SETUP_DONE_MARKER).touch()
        await server._setup_ended(0)
        assert "Setup code" not in issue.read_text() and "is set up" in issue.read_text()
        assert not (config.state_dir / TOKEN_FILE).exists()
    finally:
        await server.stop()


async def test_unwritable_state_dir_still_serves(config: AgentConfig, host: HostPaths) -> None:
    blocker = config.state_dir.parent / "file"
    blocker.write_text("")
    server = AgentServer(replace(config, state_dir=blocker / "state"), env={}, paths=host)
    await server.start()  # logs an error, but the page must still come up
    assert server.ports
    await server.stop()


async def test_port_in_use_is_a_clear_error(config: AgentConfig, host: HostPaths) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = replace(config, port=taken.getsockname()[1])
        server = AgentServer(busy, env={}, paths=host)
        with pytest.raises(MemuError, match=re.escape("cannot listen on 127.0.0.1 port")) as info:
            await server.start()
        assert info.value.hint and "another program" in info.value.hint
        await server.stop()


async def test_agetty_reloaded_only_for_agetty_dirs(
    config: AgentConfig, host: HostPaths, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(server_module, "reload_agetty", lambda: calls.append("reload"))
    server = AgentServer(config, env={}, paths=host)
    await server.start()
    await server.stop()
    assert calls == []
    monkeypatch.setattr(server_module, "AGETTY_ISSUE_DIRS", (config.issue_dir,))
    server = AgentServer(config, env={}, paths=host)
    await server.start()
    await server.stop()
    assert calls == ["reload"]


class NoIPv6Site(web.TCPSite):
    """A TCPSite on a kernel without IPv6: "every address" fails with EAFNOSUPPORT."""

    hosts_tried: ClassVar[list[str | None]] = []

    async def start(self) -> None:
        NoIPv6Site.hosts_tried.append(self._host)
        if self._host is None:
            await web_runner.BaseSite.start(self)  # registers with the runner, like the real one
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        await super().start()


async def test_every_address_falls_back_to_ipv4_without_ipv6(
    config: AgentConfig, host: HostPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "TCPSite", NoIPv6Site)
    NoIPv6Site.hosts_tried = []
    server = AgentServer(replace(config, host=""), env={}, paths=host)
    await server.start()
    try:
        assert NoIPv6Site.hosts_tried == [None, "0.0.0.0"]
        socket.create_connection(("127.0.0.1", server.ports[0]), timeout=2).close()
    finally:
        await server.stop()
