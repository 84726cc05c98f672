"""The admin's sign-in and page (memu_agent.admin_pages) through the whole app, with the
name-and-password check standing in for Synapse's and no chat server behind the members'
part (the real check and the members are tested against the real Synapse of the
host-Docker stack: tests/stack/test_family_stack.py)."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

from agent_fixtures import csrf_of
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from memu_agent.admin_pages import SignIn
from memu_agent.app import make_app
from memu_agent.config import AgentConfig
from memu_agent.facts import HostPaths
from memu_agent.ratelimit import FailureLimiter
from memu_agent.setup_pages import SetupRunner
from memu_dev.immich_api import Immich
from memu_firstboot import reapply, stack_config
from memu_firstboot.provision import Account
from memu_firstboot.state import SETUP_DONE_MARKER

Client = TestClient[web.Request, web.Application]
NO_SYNAPSE = "http://127.0.0.1:9"  # nothing listens: the members' part says so
ACCOUNTS = {("ada", "purple-kettle-sings"): SignIn.ADMIN,
            ("ben", "green-teapot-hums"): SignIn.NOT_ADMIN,
            ("ada", "chat-server-down"): SignIn.UNREACHABLE,
            ("ada", "chat-server-busy"): SignIn.LIMITED}


class Checks:
    """The stand-in check: what the chat server would say, and what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, username: str, password: str) -> tuple[SignIn, Account | None]:
        self.asked.append(username)
        said = ACCOUNTS.get((username, password), SignIn.WRONG)
        return said, Account("@ada:memu.local", "chat-token", "DEV") if said is SignIn.ADMIN \
            else None


async def open_box(aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths,
                   *, set_up: bool = True, free: int = 5,
                   immich: str = NO_SYNAPSE) -> tuple[Client, Checks]:
    if set_up:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        (config.state_dir / SETUP_DONE_MARKER).write_text("")
    checks = Checks()
    app = make_app(config, paths=host, admin_checker=checks,
                   limiter=FailureLimiter(free=free), synapse_url=NO_SYNAPSE,
                   immich_url=immich, setup_runner=SetupRunner(
                       config.state_dir, config_dir=config.state_dir / "stack"))
    return await aiohttp_client(app), checks


def error_of(page: str) -> str:
    found = re.search(r'<p class="error banner" id="sign-in-error" role="alert">([^<]*)</p>',
                      page)
    return html.unescape(found.group(1)) if found else ""


async def sign_in(client: Client, username: str, password: str) -> Any:
    form = await (await client.get("/admin/sign-in")).text()
    return await client.post("/admin/sign-in", allow_redirects=False, data={
        "username": username, "password": password, "csrf": csrf_of(form)})


async def test_sign_in_page_and_sign_out(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client, checks = await open_box(aiohttp_client, config, host)
    assert 'href="/admin"' in await (await client.get("/")).text()  # the set-up box's page
    first = await client.get("/admin", allow_redirects=False)
    assert first.status == 401 and 'action="/admin/sign-in"' in await first.text()
    resp = await sign_in(client, "ada", "purple-kettle-sings")
    assert resp.status == 303 and resp.headers["Location"] == "/admin"
    cookie = resp.cookies["memu_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    page = await client.get("/admin")
    text = await page.text()
    assert page.status == 200 and "Running version" in text and "Sign out" in text
    assert "chat server did not answer" in text  # the members' part, with no Synapse here
    assert "purple-kettle-sings" not in text and checks.asked == ["ada"]
    out = await client.post("/admin/sign-out", allow_redirects=False,
                            data={"csrf": csrf_of(text)})
    assert out.status == 303 and out.headers["Location"] == "/admin/sign-in"
    assert (await client.get("/admin", allow_redirects=False)).status == 401
    # the old session token is dead even if a browser kept it
    client.session.cookie_jar.update_cookies({"memu_session": cookie.value})
    assert (await client.get("/admin", allow_redirects=False)).status == 401


async def test_the_page_says_how_the_assistants_chat_session_is(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    """Not set up: nothing about it. Its account recorded but the chat server silent (as
    here): the page says the box cannot tell (memu_agent.assistant; signing back in is
    tested against the real Synapse in tests/intelligence/test_assistant_signin.py)."""
    client, _ = await open_box(aiohttp_client, config, host)
    assert (await sign_in(client, "ada", "purple-kettle-sings")).status == 303
    assert 'id="assistant"' not in await (await client.get("/admin")).text()
    stack_config.write_bot_account(host.stack_config, "@memu:memu.local", "token", "DEV")
    client, _ = await open_box(aiohttp_client, config, host)
    assert (await sign_in(client, "ada", "purple-kettle-sings")).status == 303
    text = " ".join((await (await client.get("/admin")).text()).split())
    found = re.search(r'<p id="assistant" class="error">([^<]*)</p>', text)
    assert found and found.group(1).startswith((
        "The box has not checked the assistant yet.",
        "The box could not ask the chat server about the assistant: the chat server did "
        "not answer (checking a session)")), text


async def test_the_page_lists_configuration_kept_because_it_was_edited(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    """A configuration file someone edited is kept by the box's apply with its own version
    beside it (memu_firstboot.stack_config.apply); the admin page names it."""
    client, _ = await open_box(aiohttp_client, config, host)
    stack = config.state_dir / "stack"
    stack_config.apply(stack_config.Settings("memu.local"), stack)
    (stack / "synapse" / "homeserver.yaml").write_text("{}\n")
    stack_config.apply(stack_config.Settings("memu.local", language="de"), stack)  # kept
    reapply.save_settings(stack_config.Settings("memu.local", language="de"), stack)
    # an update's boot (the deploy runs as a child process: not in this event loop)
    assert await asyncio.to_thread(reapply.reapply, "0.2.0", stack, config.state_dir)
    assert (await sign_in(client, "ada", "purple-kettle-sings")).status == 303
    text = await (await client.get("/admin")).text()
    assert "Configuration you edited" in text and "<code>synapse/homeserver.yaml</code>" in text
    assert ("The configuration was last made for version 0.2.0: kept 1 edited files as they "
            "are (synapse/homeserver.yaml;") in " ".join(text.split())
    assert "element/config.json" not in text  # nobody edited it: the box updated it
    assert "reachable at home only" in text  # no tailnet here


async def test_the_first_sign_in_after_photos_arrive_makes_their_administrator(
    aiohttp_client: AiohttpClient, aiohttp_server: Any, config: AgentConfig,
    host: HostPaths
) -> None:
    """Photos not there: the sign-in works and the page says what will happen; photos there
    (a stand-in of Immich's API): the next sign-in makes their administrator as the admin,
    with the password just typed, and the page names it; later sign-ins do not ask again."""
    client, _ = await open_box(aiohttp_client, config, host)
    assert (await sign_in(client, "ada", "purple-kettle-sings")).status == 303
    assert "Photos are not on the box yet" in await (await client.get("/admin")).text()
    immich = Immich()
    server = await aiohttp_server(immich.app())
    client, _ = await open_box(aiohttp_client, config, host,
                               immich=str(server.make_url("")))
    assert (await sign_in(client, "ada", "purple-kettle-sings")).status == 303
    assert immich.admin == {"email": "ada@memu.local", "password": "purple-kettle-sings",
                            "name": "ada"}
    page = await (await client.get("/admin")).text()
    assert "Your photos account: <b>ada@memu.local</b>" in page
    assert (await sign_in(client, "ada", "purple-kettle-sings")).status == 303
    assert (immich.sign_ups, immich.logouts) == (1, 0)


async def test_refusals_say_why_and_wrong_tries_back_off(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client, checks = await open_box(aiohttp_client, config, host, free=2)
    resp = await sign_in(client, "ben", "green-teapot-hums")
    assert resp.status == 403 and "not the box's admin" in error_of(await resp.text())
    down = await sign_in(client, "ada", "chat-server-down")
    assert down.status == 503 and "not answering" in error_of(await down.text())
    assert 'value="ada"' in await down.text()  # the name stays, the password does not
    busy = await sign_in(client, "ada", "chat-server-busy")
    assert busy.status == 429 and "asks to wait" in error_of(await busy.text())
    statuses = [(await sign_in(client, "ada", "guess")).status for _ in range(3)]
    assert statuses[0] == 403 and statuses[-1] == 429
    blocked = await sign_in(client, "ada", "purple-kettle-sings")
    assert blocked.status == 429 and "Too many wrong tries" in error_of(await blocked.text())
    assert checks.asked.count("ada") == 4  # not asked while blocked; down, busy not counted
    empty = await client.post("/admin/sign-in", data={"username": "ada", "password": ""})
    assert empty.status == 403  # no CSRF token: refused before anything is checked


async def test_nothing_to_sign_in_to_before_setup(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client, checks = await open_box(aiohttp_client, config, host, set_up=False)
    resp = await client.get("/admin/sign-in", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    page = await client.get("/admin", allow_redirects=False)
    assert page.status == 401 and "not set up yet" in error_of(await page.text())
    assert checks.asked == []

