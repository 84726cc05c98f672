"""A forgotten admin password reset by someone at the box (memu_agent.recover_pages), through
the whole app, with the reset standing in for Synapse's (the real one is tested against the
real Synapse of the host-Docker stack: tests/stack/test_family_stack.py)."""

from __future__ import annotations

import html
import json
import re
import time

from agent_fixtures import csrf_of
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from memu_agent import recover_pages
from memu_agent.app import make_app
from memu_agent.config import AgentConfig
from memu_agent.console import ISSUE_FILE
from memu_agent.facts import HostPaths
from memu_agent.ratelimit import FailureLimiter
from memu_agent.recover_pages import RECOVERY_FILE
from memu_firstboot.provision import MatrixError
from memu_firstboot.state import SETUP_DONE_MARKER

Client = TestClient[web.Request, web.Application]
NEW = "orange-bicycle-rings"


class Resets:
    """The stand-in reset: records (user ID, password); fails while ``down``."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []
        self.down = False

    async def __call__(self, user_id: str, password: str) -> None:
        if self.down:
            raise MatrixError("the chat server did not answer (signing in)")
        self.done.append((user_id, password))


async def open_box(aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths,
                   free: int = 5) -> tuple[Client, Resets]:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / SETUP_DONE_MARKER).write_text(json.dumps(
        {"at": 1.0, "admin": "@ada:memu-box.local"}))
    resets = Resets()
    app = make_app(config, paths=host, recoverer=resets, limiter=FailureLimiter(free=free))
    return await aiohttp_client(app), resets


def screen_code(config: AgentConfig) -> str:
    text = (config.issue_dir / ISSUE_FILE).read_text()
    assert f"within {recover_pages.VALID_S // 60} minutes" in text, text
    found = re.search(r"recovery code: (\S+)", text)
    assert found, (config.issue_dir / ISSUE_FILE).read_text()
    return found.group(1)


async def send(client: Client, page: str, code: str, password: str = NEW,
               confirm: str | None = None) -> tuple[int, str]:
    resp = await client.post("/admin/recover", data={
        "code": code, "password": password, "password_confirm": confirm or password,
        "csrf": csrf_of(page)})
    return resp.status, html.unescape(await resp.text())


async def test_the_code_on_the_screen_sets_a_new_password(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client, resets = await open_box(aiohttp_client, config, host)
    page = await (await client.get("/admin/recover")).text()
    code = screen_code(config)
    assert code not in page  # on the box's screen only, never on the network
    assert (config.state_dir / RECOVERY_FILE).stat().st_mode & 0o777 == 0o600
    again = await (await client.get("/admin/recover")).text()
    assert screen_code(config) == code  # the pending code stays until used or expired
    status, text = await send(client, again, "aaaa-bbbb-cccc")
    assert status == 403 and "not the code on the box's screen" in text
    status, text = await send(client, again, "aaaa-bbbb-cccc", password="short")
    assert status == 400 and "at least 12 characters" in text
    status, text = await send(client, again, "aaaa-bbbb-cccc", confirm="orange-bicycle-ringz")
    assert status == 400 and "not the same" in text
    status, text = await send(client, again, code.upper().replace("-", " "))
    assert status == 200 and "password is changed" in text and 'value="ada"' in text
    assert resets.done == [("@ada:memu-box.local", NEW)]
    assert "recovery code" not in (config.issue_dir / ISSUE_FILE).read_text()
    status, _ = await send(client, again, code)  # used up
    assert status == 403 and len(resets.done) == 1


async def test_expired_codes_wrong_tries_and_a_failed_reset(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client, resets = await open_box(aiohttp_client, config, host, free=2)
    page = await (await client.get("/admin/recover")).text()
    code = screen_code(config)
    resets.down = True
    status, text = await send(client, page, code)
    assert status == 502 and "did not answer" in text and resets.done == []
    resets.down = False
    stored = config.state_dir / RECOVERY_FILE
    stored.write_text(json.dumps({"code": code, "expires_at": time.time() - 1}))
    status, text = await send(client, page, code)
    assert status == 403 and "expired" in text
    statuses = [(await send(client, page, "aaaa-bbbb-cccc"))[0] for _ in range(3)]
    assert statuses[-1] == 429 and resets.done == []


async def test_nothing_to_recover_before_setup(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client = await aiohttp_client(make_app(config, paths=host))
    resp = await client.get("/admin/recover", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    assert not (config.state_dir / RECOVERY_FILE).exists()


def test_the_console_says_the_minutes_left(config: AgentConfig) -> None:
    """After an agent restart the console shows the code again with the time it has left."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / RECOVERY_FILE).write_text(json.dumps(
        {"code": "aaaa-bbbb-cccc", "expires_at": 1000.0}))
    assert recover_pages.for_console(config.state_dir, now=1000.0 - 601) == (
        "aaaa-bbbb-cccc", 11)
    assert recover_pages.for_console(config.state_dir, now=999.5) == ("aaaa-bbbb-cccc", 1)
    assert recover_pages.for_console(config.state_dir, now=1000.0) is None
