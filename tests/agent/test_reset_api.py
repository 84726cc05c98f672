"""POST /api/factory-reset through aiohttp's test client: confirmation, auth, marker, reboot."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent_fixtures import code_header
from pytest_aiohttp import AiohttpClient

from memu_agent.app import make_app
from memu_agent.config import AgentConfig
from memu_agent.facts import HostPaths
from memu_agent.reset_api import CONFIRM, MARKER
from memu_firstboot.state import SETUP_DONE_MARKER


async def test_reset_needs_the_exact_confirmation(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    reboots: list[int] = []
    client = await aiohttp_client(make_app(config, paths=host,
                                           reboot=lambda: reboots.append(1)))
    code = code_header(config.state_dir)
    for body in ({}, {"confirm": "yes"}, {"confirm": CONFIRM.upper()}):
        resp = await client.post("/api/factory-reset", json=body, headers=code)
        assert resp.status == 400
        assert CONFIRM in (await resp.json())["hint"]
    resp = await client.post("/api/factory-reset", data=b"not json", headers=code)
    assert resp.status == 400
    await asyncio.sleep(1.2)
    assert not (config.state_dir / MARKER).exists()
    assert reboots == []


async def test_reset_marks_and_reboots(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    reboots: list[int] = []
    client = await aiohttp_client(make_app(config, paths=host,
                                           reboot=lambda: reboots.append(1)))
    resp = await client.post("/api/factory-reset", json={"confirm": CONFIRM},
                             headers=code_header(config.state_dir))
    assert resp.status == 202
    assert (await resp.json())["state"] == "resetting"
    assert (config.state_dir / MARKER).exists()
    await asyncio.sleep(1.3)
    assert reboots == [1]


async def test_reset_needs_the_token_once_set_up(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths, tmp_path: Path
) -> None:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / SETUP_DONE_MARKER).write_text("")
    (config.state_dir / "api-token").write_text("s3cret\n")
    client = await aiohttp_client(make_app(config, paths=host, reboot=lambda: None))
    for headers in ({}, code_header(config.state_dir)):  # the code stops working at setup
        resp = await client.post("/api/factory-reset", json={"confirm": CONFIRM},
                                 headers=headers)
        assert resp.status in (401, 403)
    assert not (config.state_dir / MARKER).exists()
    resp = await client.post("/api/factory-reset", json={"confirm": CONFIRM},
                             headers={"Authorization": "Bearer s3cret"})
    assert resp.status == 202
