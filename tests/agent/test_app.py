"""The agent's HTTP app through aiohttp's test client, with a fake host tree."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from memu_agent.app import make_app
from memu_agent.config import AgentConfig
from memu_agent.facts import HostPaths
from memu_firstboot.setup_token import ensure_token
from memu_firstboot.state import SETUP_DONE_MARKER


async def client_for(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> TestClient[web.Request, web.Application]:
    return await aiohttp_client(make_app(config, paths=host))


async def test_status_json_from_fake_host(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client = await client_for(aiohttp_client, config, host)
    resp = await client.get("/api/status")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    update = body.pop("update")
    docker_error = body["stack"].pop("error")
    assert docker_error.startswith("Docker does not answer"), docker_error
    assert body["assistant"].pop("checked_at") >= 0  # 0 before the watch's first check
    storage = body.pop("storage")  # of the test's own disk (memu_agent.storage)
    assert storage["state"] in ("ok", "low", "full") and storage["total_bytes"] > 0
    assert update["state"] == "idle" and update["running"] == "0.3.1"
    assert update["channel"] == "stable" and update["last_result"] is None
    assert body == {
        "version": "0.3.1",
        "variant": None,
        "boot": {"slot": None, "entry": "memu_0.3.1+2-1.efi", "usr_partlabel": "memu-os_0.3.1"},
        "uptime_s": 1234.56,
        "setup": {"state": "pending"},
        "device_name": "Okafor box",
        "hostname": "memu-box",
        "stack": {"preload": {"state": "done", "version": "0.3.1", "seconds": 40.5},
                  "pull": {"state": "not started"},
                  "images": {"postgres": {"state": "loaded", "seconds": 12.5}},
                  "data": {"step": "not started"}, "model": {"state": "not started"},
                  "services": {}},
        "assistant": {"session": "not-set-up", "message": "The assistant is not set up yet.",
                      "signed_in_again_at": None},
        "npu": {"state": "absent", "pci": None, "driver": None, "device": None},
    }


async def test_status_reads_uptime_and_setup_state_live(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client = await client_for(aiohttp_client, config, host)
    (host.proc / "uptime").write_text("99.5 1.0\n")
    config.state_dir.mkdir(parents=True)
    (config.state_dir / SETUP_DONE_MARKER).touch()
    body = await (await client.get("/api/status")).json()
    assert body["uptime_s"] == 99.5
    assert body["setup"] == {"state": "done"}


async def test_status_never_shows_the_token(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    token = ensure_token(config.state_dir)
    client = await client_for(aiohttp_client, config, host)
    for path in ("/api/status", "/"):
        assert token not in await (await client.get(path)).text()


async def test_index_is_setup_page_then_done_page(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client = await client_for(aiohttp_client, config, host)
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert "Okafor box" in page and "0.3.1" in page
    assert 'name="family_name"' in page and 'name="admin_password"' in page
    assert 'name="tailscale_auth_key"' in page
    assert 'name="setup_code"' in page and 'name="csrf"' in page

    config.state_dir.mkdir(parents=True)
    (config.state_dir / SETUP_DONE_MARKER).touch()
    page = await (await client.get("/")).text()
    assert "is set up" in page
    assert "admin_password" not in page


async def test_device_name_is_escaped(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    evil = replace(config, device_name='<script>alert("x")</script>')
    client = await client_for(aiohttp_client, evil, host)
    page = await (await client.get("/")).text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


async def test_css_and_unknown_paths(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client = await client_for(aiohttp_client, config, host)
    css = await client.get("/static/firstboot.css")
    assert css.status == 200 and css.content_type == "text/css"
    assert "max-width" in await css.text()
    assert (await client.get("/nope")).status == 404
    assert (await client.get("/api/nope")).status == 404
    assert (await client.post("/api/status")).status == 405


def test_default_paths_make_an_app(tmp_path: Path) -> None:
    app = make_app(AgentConfig(state_dir=tmp_path))
    assert {r.name for r in app.router.named_resources().values()} >= {
        "api-status",
        "front-door-root",
    }
