"""The first-boot pages on their own: setup state, rendering, escaping, headers."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from pytest_aiohttp import AiohttpClient

from memu_firstboot import web as firstboot_web
from memu_firstboot.state import SETUP_DONE_MARKER, SetupState, setup_state


def info(tmp_path: Path, name: str = "memu") -> firstboot_web.PageInfo:
    return firstboot_web.PageInfo(
        device_name=name, version="1.2.3", hostname="memu-box", state_dir=tmp_path
    )


def app_for(page: firstboot_web.PageInfo) -> web.Application:
    app = web.Application()
    firstboot_web.add_routes(app, page)
    return app


def test_setup_state_follows_the_marker(tmp_path: Path) -> None:
    assert setup_state(tmp_path) is SetupState.PENDING
    assert setup_state(tmp_path / "missing") is SetupState.PENDING
    (tmp_path / SETUP_DONE_MARKER).touch()
    assert setup_state(tmp_path) is SetupState.DONE
    assert str(SetupState.DONE) == "done"


async def test_setup_page(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    client = await aiohttp_client(app_for(info(tmp_path, "Okafor box")))
    resp = await client.get("/")
    assert resp.status == 200
    page = await resp.text()
    assert page.startswith("<!doctype html>")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "<title>Set up Okafor box</title>" in page
    assert "Memu OS 1.2.3" in page and "memu-box" in page
    for field in ("family_name", "admin_password", "tailscale_auth_key"):
        assert f'name="{field}"' in page
    assert "<fieldset disabled>" in page
    assert "arrives in a later release" in page
    # nothing from elsewhere: no scripts, no absolute URLs to other hosts
    assert "<script" not in page
    assert "http://" not in page and "https://" not in page
    assert "{{" not in page and "{%" not in page  # every placeholder was filled
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "style-src 'self'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_done_page(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    (tmp_path / SETUP_DONE_MARKER).touch()
    client = await aiohttp_client(app_for(info(tmp_path)))
    page = await (await client.get("/")).text()
    assert '<h1><span class="name">memu</span> is set up</h1>' in page
    # the shared layout: same head, style sheet and facts as the setup page
    assert '<link rel="stylesheet" href="/static/firstboot.css">' in page
    assert "<dt>Network name</dt><dd>memu-box</dd>" in page and "Memu OS 1.2.3" in page
    assert "<form" not in page


async def test_values_are_escaped(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    page_info = firstboot_web.PageInfo(
        device_name="<b>&'\"", version="<1>", hostname="<h>", state_dir=tmp_path
    )
    client = await aiohttp_client(app_for(page_info))
    page = await (await client.get("/")).text()
    assert "<b>" not in page and "<1>" not in page and "<h>" not in page
    assert "&lt;b&gt;&amp;&#39;&#34;" in page
    assert "&lt;1&gt;" in page and "&lt;h&gt;" in page


async def test_stylesheet(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    client = await aiohttp_client(app_for(info(tmp_path)))
    resp = await client.get("/static/firstboot.css")
    assert resp.status == 200
    assert resp.content_type == "text/css"
    css = await resp.text()
    assert "@media (prefers-color-scheme: dark)" in css
    assert "url(" not in css and "@import" not in css  # no external resources
