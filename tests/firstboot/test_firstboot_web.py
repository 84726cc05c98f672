"""The first-boot pages on their own: setup state, rendering, escaping, headers."""

from __future__ import annotations

import fnmatch
import tomllib
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


def test_setup_form_renders_values_errors_and_nothing_from_elsewhere(tmp_path: Path) -> None:
    page = firstboot_web.render(
        firstboot_web.page_templates(), "setup.html", info(tmp_path, "Okafor box"),
        values={"family_name": "The Okafors", "timezone": "Europe/London"},
        errors={"admin_password": "Please use at least 12 characters."},
        claimed=False, csrf="tok", server_name="memu-box.local", zones=("Europe/London",),
        languages=("en-GB",), min_password=12, prefilled=True)
    assert page.startswith("<!doctype html>")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "<title>Set up Okafor box</title>" in page
    assert "Memu OS 1.2.3" in page and "memu-box" in page
    for field in ("setup_code", "family_name", "admin_username", "admin_password",
                  "admin_password_confirm", "timezone", "language", "tailscale_auth_key"):
        assert f'name="{field}"' in page
    assert 'value="The Okafors"' in page and 'name="csrf" value="tok"' in page
    # the error sits next to its field and the field points at it
    assert ('<p class="error" id="admin_password-error" role="alert">Please use at least 12 '
            "characters.</p>") in page
    assert 'aria-describedby="admin_password-help admin_password-error" aria-invalid="true"' in page
    assert ":memu-box.local" in page and "cannot change later" in page
    assert 'data-prefilled="1"' in page
    # nothing from elsewhere: one same-origin script, no absolute URLs to other hosts
    assert page.count("<script") == 1 and '<script src="/static/setup.js">' in page
    assert "http://" not in page and "https://" not in page
    assert "{{" not in page and "{%" not in page  # every placeholder was filled


def test_claimed_form_asks_no_code(tmp_path: Path) -> None:
    page = firstboot_web.render(
        firstboot_web.page_templates(), "setup.html", info(tmp_path), values={}, errors={},
        claimed=True, csrf="tok", server_name="memu.local", zones=(), languages=(),
        min_password=12, prefilled=False)
    assert 'name="setup_code"' not in page and "This device holds the box" in page
    assert "data-prefilled" not in page


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


async def test_headers_forbid_everything_from_elsewhere(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client = await aiohttp_client(app_for(info(tmp_path)))
    resp = await client.get("/")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "style-src 'self'" in csp
    assert "script-src 'self'" in csp and "form-action 'self'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"
    js = await client.get("/static/setup.js")
    assert js.status == 200 and js.content_type == "text/javascript"
    assert "Intl.DateTimeFormat" in await js.text()


async def test_stylesheet(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    client = await aiohttp_client(app_for(info(tmp_path)))
    resp = await client.get("/static/firstboot.css")
    assert resp.status == 200
    assert resp.content_type == "text/css"
    css = await resp.text()
    assert "@media (prefers-color-scheme: dark)" in css
    assert "url(" not in css and "@import" not in css  # no external resources


def test_every_page_file_ships_in_the_package() -> None:
    """The OS image installs the wheel: a page file that pyproject's package-data does not
    name is missing on the box (the agent cannot start without it)."""
    repo = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["*"]
    root = repo / "firstboot" / "memu_firstboot"
    files = [p for d in ("static", "templates") for p in (root / d).iterdir() if p.is_file()]
    assert files
    for path in files:
        assert any(fnmatch.fnmatch(path.name, p) for p in patterns), path
