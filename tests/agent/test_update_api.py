"""/api/update through aiohttp's test client: actions, errors and authentication."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from agent_fixtures import code_header
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from memu_agent.app import make_app
from memu_agent.config import AgentConfig
from memu_agent.facts import HostPaths
from memu_firstboot.state import SETUP_DONE_MARKER
from memu_ota.updater import Updater

FAKE = """#!/bin/sh
case "$*" in
  *"list 0.4.0"*) echo '{"version":"0.4.0","available":true,"installed":false}' ;;
  *list*) echo '{"current":"0.3.1","all":["0.4.0","0.3.1"],"appstreamUrls":[]}' ;;
  *update*) sleep 0.3 ;;
esac
"""


async def client_with_updater(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths, tmp_path: Path,
    *, with_code: bool = True,
) -> tuple[TestClient[web.Request, web.Application], Updater]:
    """A test client of the agent with a fake sysupdate; it sends the setup code on every
    request unless ``with_code`` is false."""
    fake = tmp_path / "fake-sysupdate"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "10-usr.transfer.in").write_text("[Source]\nPath=@SOURCE_URL@\n")
    ota = replace(config.ota, sysupdate=fake)
    updater = Updater(ota, running="0.3.1", boot_id="b")
    await updater.start(periodic=False)
    headers = code_header(config.state_dir) if with_code else {}
    client = await aiohttp_client(make_app(replace(config, ota=ota), paths=host,
                                           updater=updater), headers=headers)
    return client, updater


async def wait_idle(updater: Updater) -> None:
    for _ in range(300):
        if not updater.busy():
            return
        await asyncio.sleep(0.01)


async def test_check_install_and_busy(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths, tmp_path: Path
) -> None:
    client, updater = await client_with_updater(aiohttp_client, config, host, tmp_path)
    resp = await client.post("/api/update", json={"action": "check"})
    assert resp.status == 202
    assert (await resp.json())["state"] == "checking"
    assert (await client.post("/api/update", json={"action": "check"})).status == 409
    await wait_idle(updater)
    body = await (await client.get("/api/update")).json()
    assert body["available"] == "0.4.0" and body["running"] == "0.3.1"
    status = await (await client.get("/api/status")).json()
    assert status["update"]["available"] == "0.4.0"

    resp = await client.post("/api/update", json={"action": "install", "version": "0.3.0"})
    assert resp.status == 409 and "not newer" in (await resp.json())["error"]
    assert (await client.post("/api/update", json={"action": "install"})).status == 202
    busy = await client.post("/api/update", json={"action": "install"})
    assert busy.status == 409 and (await busy.json())["hint"]
    await wait_idle(updater)
    assert (await (await client.get("/api/update")).json())["state"] == "ready"
    await updater.stop()


async def test_bad_input(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths, tmp_path: Path
) -> None:
    client, updater = await client_with_updater(aiohttp_client, config, host, tmp_path)
    for body in ("not json", "[1]"):
        assert (await client.post("/api/update", data=body)).status == 400
    for payload in ({"action": "fly"}, {"action": "install", "version": 3},
                    {"action": "reboot", "at": "tomorrow"},
                    {"action": "reboot", "at": "2030-01-01T03:00:00"},
                    {"action": "source", "channel": "nightly"}):
        resp = await client.post("/api/update", json=payload)
        assert resp.status == 400, payload
        assert (await resp.json())["error"]
    resp = await client.post("/api/update", json={"action": "reboot"})
    assert resp.status == 409  # nothing installed yet
    await updater.stop()


async def test_auth_after_setup(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths, tmp_path: Path
) -> None:
    client, updater = await client_with_updater(aiohttp_client, config, host, tmp_path,
                                                with_code=False)
    check = {"action": "check"}
    resp = await client.post("/api/update", json=check)  # setup pending: the code is needed
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / SETUP_DONE_MARKER).touch()
    assert (await client.get("/api/update")).status == 200  # read-only, like /api/status
    resp = await client.post("/api/update", json=check)
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    token_file = config.state_dir / "api-token"
    token_file.write_text("s3cret-token\n")
    token_file.chmod(0o600)
    bad = {"Authorization": "Bearer wrong"}
    good = {"Authorization": "Bearer s3cret-token"}
    assert (await client.post("/api/update", json=check, headers=bad)).status == 403
    assert (await client.post("/api/update", json={"action": "check"},
                              headers=good)).status == 202
    assert (await client.get("/api/status")).status == 200  # status stays public
    await wait_idle(updater)
    await updater.stop()
