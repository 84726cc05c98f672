"""The first-boot page in a real headless Chromium (Debian's, driven by Playwright), against
the agent on loopback and the family stack on the host's Docker: the setup code mistyped,
a weak password, then the whole setup with JavaScript off (the progress page refreshes
itself) to the ready page; the real apply (``python -m memu_firstboot.apply``) makes the
accounts and the family room on the real Synapse. With JavaScript on, the page takes the
browser's own time zone. Screenshots at phone and desktop size are kept under
``test-results/screenshots/``.

The stack is the host's, already started (memu_dev.hoststack), so the apply's commands that
start it, reload it and set the host's time zone are ``true`` here; the QEMU stack test runs
them for real."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright, expect

from memu_agent.app import BootFacts, make_app
from memu_agent.config import AgentConfig
from memu_agent.facts import BootInfo, HostPaths
from memu_agent.setup_pages import SetupRunner
from memu_common import container_lock as lock
from memu_dev import hoststack
from memu_dev.engine import Engine
from memu_dev.paths import REPO
from memu_firstboot.setup_token import ensure_token
from memu_firstboot.state import SETUP_DONE_MARKER

pytestmark = pytest.mark.services

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-results" / "screenshots"
HOSTNAME = "memu-box"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def chat(engine: Engine, images: dict[str, lock.LockEntry],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[hoststack.Chat]:
    """The chat core, with the server name the box's setup fixes for this host name."""
    workdir = tmp_path_factory.mktemp("browser")
    with hoststack.chat(engine, workdir, "memu-test-browser",
                        server_name=f"{HOSTNAME}.local") as running:
        yield running


@pytest.fixture
async def agent(chat: hoststack.Chat, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The agent's app on a loopback port, set up to run the real apply against ``chat``;
    yields its base URL and state directory."""
    proc = tmp_path / "proc"
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "sys" / "kernel" / "hostname").write_text(HOSTNAME + "\n")
    state = tmp_path / "state"
    config = AgentConfig(host="127.0.0.1", port=0, device_name="memu", state_dir=state,
                         issue_dir=tmp_path / "issue.d")
    command = [sys.executable, "-m", "memu_firstboot.apply", "--state-dir", str(state),
               "--config", str(chat.config), "--synapse", chat.inside,
               "--start-stack", "true", "--reload-stack", "true", "--set-timezone", "true",
               "--set-pretty-name", "true"]
    app = make_app(config, paths=HostPaths(proc=proc, data=tmp_path),
                   facts=BootFacts("0.1.0", BootInfo(None, None, None)),
                   setup_runner=SetupRunner(state, command, config_dir=chat.config))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        await runner.cleanup()


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing (run tools/setup-services.sh as root: it installs "
                    "Debian's chromium)", pytrace=False)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(chromium),
                                            args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def fill(page: Page, code: str, password: str) -> None:
    await page.fill("#setup_code", code)
    await page.fill("#family_name", "The Okafors")
    await page.fill("#admin_username", "ada")
    await page.fill("#admin_password", password)
    await page.fill("#admin_password_confirm", password)


async def test_setup_in_a_browser_without_javascript(
        agent: tuple[str, Path], browser: Browser, chat: hoststack.Chat) -> None:
    base, state = agent
    code = ensure_token(state)
    context = await browser.new_context(java_script_enabled=False, viewport=PHONE,
                                        locale="en-GB", is_mobile=True)
    page = await context.new_page()
    await page.goto(base + "/")
    await expect(page.locator("#timezone")).to_have_value("Europe/London")  # Accept-Language
    await shot(page, "setup-phone")
    # a mistyped code: said next to the field, what was typed kept
    await fill(page, "aaaa-bbbb-cccc", "purple-kettle-sings")
    await page.click("button[type=submit]")
    await expect(page.locator("#setup_code-error")).to_contain_text("not this box's setup code")
    await expect(page.locator("#family_name")).to_have_value("The Okafors")
    await shot(page, "wrong-code-phone")
    # a weak password with the right code: the box is claimed, the password explained
    await fill(page, code, "okafors2024")
    await page.click("button[type=submit]")
    await expect(page.locator("#admin_password-error")).to_contain_text("at least 12")
    await expect(page.locator("#setup_code")).to_have_count(0)
    await shot(page, "weak-password-phone")
    # the whole setup: progress refreshes itself (no script) and ends on the ready page
    await page.fill("#admin_password", "purple-kettle-sings")
    await page.fill("#admin_password_confirm", "purple-kettle-sings")
    await page.click("button[type=submit]")
    await page.wait_for_url("**/setup/progress", timeout=30_000)
    await shot(page, "progress-phone")
    await page.wait_for_url("**/setup/ready", timeout=600_000)
    await expect(page.locator("h1")).to_contain_text("is ready")
    await expect(page.locator("main")).to_contain_text(f"#family:{HOSTNAME}.local")
    await shot(page, "ready-phone")
    await page.set_viewport_size(DESKTOP)
    await shot(page, "ready-desktop")
    assert (state / SETUP_DONE_MARKER).exists()
    await context.close()


async def test_the_page_takes_the_browsers_time_zone_and_fits_a_phone(
        agent: tuple[str, Path], browser: Browser) -> None:
    base, _ = agent
    context = await browser.new_context(viewport=PHONE, locale="en-GB",
                                        timezone_id="Asia/Tokyo", is_mobile=True)
    page = await context.new_page()
    await page.goto(base + "/")
    await expect(page.locator("#timezone")).to_have_value("Asia/Tokyo")
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone"
    await page.set_viewport_size(DESKTOP)
    await shot(page, "setup-desktop")
    await context.close()
