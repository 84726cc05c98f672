"""The first-boot flow through the agent's pages, as a browser without JavaScript drives it:
the claim (form field and QR link), CSRF, errors next to fields, the apply as a real child
process (the real runner, request and progress files; stand-in step bodies,
tests/agent/fake_apply.py), failure and Retry, a power cut mid-apply, and the ready page."""

from __future__ import annotations

import asyncio
import html
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import csrf_of
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from memu_agent.app import make_app
from memu_agent.config import AgentConfig
from memu_agent.facts import HostPaths
from memu_agent.ratelimit import FailureLimiter
from memu_agent.setup_pages import SetupRunner
from memu_firstboot import apply, progress
from memu_firstboot.form import SetupRequest
from memu_firstboot.setup_token import TOKEN_FILE, ensure_token
from memu_firstboot.state import SETUP_DONE_MARKER, setup_admin

Client = TestClient[web.Request, web.Application]
FAKE_APPLY = Path(__file__).with_name("fake_apply.py")
FORM = {"family_name": "The Okafors", "admin_username": "ada",
        "admin_password": "purple-kettle-sings", "admin_password_confirm": "purple-kettle-sings",
        "timezone": "Europe/London", "language": "en-GB", "tailscale_auth_key": ""}


def make(aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths,
         fail: str = "", limiter: FailureLimiter | None = None) -> Any:
    command = [sys.executable, str(FAKE_APPLY), str(config.state_dir)] + ([fail] if fail else [])
    return aiohttp_client(make_app(config, paths=host, limiter=limiter,
                                   setup_runner=SetupRunner(config.state_dir, command,
                                                            config_dir=config.state_dir)))


async def opened(aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths,
                 fail: str = "") -> tuple[Client, str, str]:
    """A new box's agent with a browser on its form: (client, setup code, CSRF token)."""
    client = await make(aiohttp_client, config, host, fail)
    code = ensure_token(config.state_dir)
    return client, code, csrf_of(await form_page(client))


async def form_page(client: Client, **headers: str) -> str:
    resp = await client.get("/", headers=headers)
    assert resp.status == 200
    return await resp.text()


async def post(client: Client, path: str, data: dict[str, str]) -> ClientResponse:
    return await client.post(path, data=data, allow_redirects=False)


async def until_finished(client: Client, deadline_s: float = 30.0) -> dict[str, Any]:
    """Poll /api/setup until the run is no longer running (bounded)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        body = await (await client.get("/api/setup")).json()
        if body["state"] not in ("running",):
            return dict(body)
        await asyncio.sleep(0.1)
    raise AssertionError(f"the apply did not finish within {deadline_s} s")


def error_at(page: str, field: str) -> str:
    found = re.search(rf'<p class="error" id="{field}-error" role="alert">([^<]*)</p>', page)
    return html.unescape(found.group(1)) if found else ""


async def test_form_is_prefilled_from_the_browser_and_hands_out_a_csrf_cookie(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client = await make(aiohttp_client, config, host)
    resp = await client.get("/", headers={"Accept-Language": "de-AT,de;q=0.9,en;q=0.5"})
    page = await resp.text()
    assert 'name="timezone" type="text" list="zones" autocomplete="off"' in page
    assert 'value="Europe/Vienna"' in page and 'value="de-AT"' in page
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"memu_csrf={csrf_of(page)};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "@<span>name</span>:memu-box.local" in page  # the permanent server name, said


async def test_whole_flow_without_javascript(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client = await make(aiohttp_client, config, host)
    code = ensure_token(config.state_dir)
    page = await form_page(client)
    resp = await post(client, "/setup", {**FORM, "setup_code": code.upper(),
                                         "csrf": csrf_of(page)})
    assert resp.status == 303 and resp.headers["Location"] == "/setup/progress"
    session = resp.cookies["memu_session"]
    assert session["httponly"] and session["samesite"] == "Strict"
    stored = apply.load_request(config.state_dir)
    assert stored == apply.StoredRequest(
        SetupRequest("The Okafors", "ada", "purple-kettle-sings", "Europe/London", "en-GB"),
        "memu-box.local")
    assert (config.state_dir / apply.REQUEST_FILE).stat().st_mode & 0o777 == 0o600
    # the progress page refreshes itself while running
    waiting = await (await client.get("/setup/progress", allow_redirects=False)).text()
    assert '<meta http-equiv="refresh" content="2">' in waiting or "is ready" in waiting
    body = await until_finished(client)
    assert body["state"] == "done"
    assert [(s["name"], s["state"]) for s in body["steps"]] == [
        (s.name, "skipped" if s.name == "remote-access" else "done") for s in apply.STEPS]
    assert all(isinstance(s["seconds"], float) for s in body["steps"])
    # the end: marker made, password and setup code gone, setup closed, the ready page
    assert setup_admin(config.state_dir) == "@ada:memu-box.local"  # for password recovery
    assert not (config.state_dir / apply.REQUEST_FILE).exists()
    assert not (config.state_dir / TOKEN_FILE).exists()
    resp = await client.get("/setup/progress", allow_redirects=False)
    assert resp.headers["Location"] == "/setup/ready"
    ready = await (await client.get("/setup/ready")).text()
    assert "Your <span" in ready and "#family:memu-box.local" in ready
    # Photos not there yet (the fake apply's photos step): the account the box will make.
    assert "makes your photos account\n    (<b>ada@memu-box.local</b>" in ready
    again = await post(client, "/setup", {**FORM, "setup_code": code, "csrf": csrf_of(page)})
    assert again.status == 410 and "is set up" in await again.text()
    # nothing secret in any page or API answer along the way
    for path in ("/api/setup", "/api/status", "/setup/ready", "/"):
        text = await (await client.get(path)).text()
        assert FORM["admin_password"] not in text and code not in text


async def test_mistakes_are_shown_next_to_their_field(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client, code, token = await opened(aiohttp_client, config, host)
    # a mistyped code: refused, said at the code, nothing else lost
    resp = await post(client, "/setup", {**FORM, "setup_code": "aaaa-bbbb-cccc", "csrf": token})
    page = await resp.text()
    assert resp.status == 403
    assert "not this box's setup code" in error_at(page, "setup_code")
    assert 'value="The Okafors"' in page and FORM["admin_password"] not in page
    assert "memu_session" not in resp.cookies
    # a weak password with the right code: the box is claimed, the password is explained
    weak = {**FORM, "admin_password": "okafors2024", "admin_password_confirm": "okafors2024"}
    resp = await post(client, "/setup", {**weak, "setup_code": code, "csrf": token})
    page = await resp.text()
    assert resp.status == 400 and "at least 12 characters" in error_at(page, "admin_password")
    assert "memu_session" in resp.cookies and 'name="setup_code"' not in page
    assert "okafors2024" not in page
    # the confirmation, then the family name missing (the claim session carries on)
    resp = await post(client, "/setup", {**FORM, "admin_password_confirm": "other-words-here",
                                         "family_name": " ", "csrf": token})
    page = await resp.text()
    assert resp.status == 400
    assert "not the same" in error_at(page, "admin_password_confirm")
    assert error_at(page, "family_name")
    assert not (config.state_dir / apply.REQUEST_FILE).exists()


async def test_a_form_without_the_page_token_is_refused(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client = await make(aiohttp_client, config, host)
    code = ensure_token(config.state_dir)
    await form_page(client)
    for token in ("", "x" * 43):
        resp = await post(client, "/setup", {**FORM, "setup_code": code, "csrf": token})
        assert resp.status == 403 and "expired" in await resp.text()
    assert not (config.state_dir / apply.REQUEST_FILE).exists()
    # from another site: refused before anything is read
    resp = await client.post("/setup", data={**FORM, "setup_code": code},
                             headers={"Origin": "http://evil.example"})
    assert resp.status == 403


async def test_qr_link_claims_and_leaves_no_code_in_the_address(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client = await make(aiohttp_client, config, host, limiter=FailureLimiter(free=2))
    code = ensure_token(config.state_dir)
    resp = await client.get(f"/setup/claim?code={code}", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    assert "memu_session" in resp.cookies
    page = await form_page(client)
    assert "This device holds the box" in page and 'name="setup_code"' not in page
    # a wrong link: said plainly, counted as a wrong try
    client.session.cookie_jar.clear()
    statuses = []
    for _ in range(4):
        resp = await client.get("/setup/claim?code=aaaa-bbbb-cccc", allow_redirects=False)
        statuses.append(resp.status)
    assert statuses[0] == 403 and statuses[-1] == 429
    assert "Too many wrong tries" in error_at(await resp.text(), "setup_code")


async def test_code_in_the_address_counts_only_for_the_qr_link(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client, code, token = await opened(aiohttp_client, config, host)
    resp = await post(client, f"/setup?code={code}", {**FORM, "csrf": token})
    assert resp.status == 401 and "type the setup code" in error_at(await resp.text(),
                                                                     "setup_code")
    resp = await client.get(f"/?code={code}", allow_redirects=False)
    assert resp.status == 200 and "memu_session" not in resp.cookies


async def test_failed_step_shows_why_and_retry_completes(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client, code, token = await opened(aiohttp_client, config, host, fail="accounts")
    await post(client, "/setup", {**FORM, "setup_code": code, "csrf": token})
    body = await until_finished(client)
    assert body["state"] == "failed"
    failed = [s for s in body["steps"] if s["state"] == "failed"]
    assert [s["name"] for s in failed] == ["accounts"]
    assert failed[0]["message"] == "the chat server refused making the account"
    page = await (await client.get("/setup/progress")).text()
    assert "Setup stopped" in page and 'action="/setup/retry"' in page
    assert "the chat server refused making the account" in page and "refresh" not in page
    # "change what you typed" leads to the form, not back here
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 200 and 'name="family_name"' in await resp.text()
    resp = await post(client, "/setup/retry", {"csrf": csrf_of(page)})
    assert resp.status == 303 and resp.headers["Location"] == "/setup/progress"
    assert (await until_finished(client))["state"] == "done"
    assert (config.state_dir / SETUP_DONE_MARKER).exists()


async def test_power_cut_mid_apply_then_retry(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    # What the disk holds after a power cut during the apply: the claim, the stored request
    # and a progress file that still says "running".
    client, code, token = await opened(aiohttp_client, config, host)
    resp = await client.get(f"/setup/claim?code={code}", allow_redirects=False)
    session = resp.cookies["memu_session"].value
    apply.save_request(config.state_dir, apply.StoredRequest(
        SetupRequest("The Okafors", "ada", "purple-kettle-sings", "Etc/UTC", "en"),
        "memu-box.local"))
    steps = apply.STEPS[:3]
    prog = progress.Progress(config.state_dir / progress.PROGRESS_FILE, steps)
    prog.step(0, state="done", seconds=0.2)
    prog.step(1, state="running")
    # the box comes back: a new agent, the same browser
    client = await make(aiohttp_client, config, host)
    client.session.cookie_jar.update_cookies({"memu_session": session, "memu_csrf": token})
    page = await (await client.get("/setup/progress")).text()
    assert "lost power" in page and 'action="/setup/retry"' in page
    assert (await (await client.get("/api/setup")).json())["state"] == "interrupted"
    resp = await post(client, "/setup/retry", {"csrf": token})
    assert resp.status == 303
    assert (await until_finished(client))["state"] == "done"


async def test_a_new_claim_replaces_the_old_session_during_setup(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    client, code, token = await opened(aiohttp_client, config, host, fail="database")
    resp = await post(client, "/setup", {**FORM, "setup_code": code, "csrf": token})
    old = resp.cookies["memu_session"].value
    assert (await until_finished(client))["state"] == "failed"
    # the phone died; the family claims again from a laptop with the code
    client.session.cookie_jar.clear()
    resp = await client.get(f"/setup/claim?code={code}", allow_redirects=False)
    new = resp.cookies["memu_session"].value
    assert new != old
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({"memu_session": old, "memu_csrf": token})
    resp = await post(client, "/setup/retry", {"csrf": token})
    assert resp.status == 401 and "Please type the setup code" in await resp.text()


@pytest.mark.parametrize("state", ["failed", "done"])
async def test_progress_page_states(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths, state: str
) -> None:
    client = await make(aiohttp_client, config, host)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    prog = progress.Progress(config.state_dir / progress.PROGRESS_FILE, apply.STEPS[:2])
    prog.step(0, state="done", seconds=1.26, message="made 8 new secrets")
    prog.step(1, state=state if state == "failed" else "done", seconds=3.0,
                  message="<disk full>", hint="free some space")
    prog.finish(state)
    page = await (await client.get("/setup/progress")).text()
    assert "Secrets" in page and "made 8 new secrets" in page and "1 s" in page
    assert "&lt;disk full&gt;" in page  # step messages are escaped
    if state == "failed":
        assert "One step did not work" in page and "free some space" in page
    else:
        assert '<a href="/setup/ready">' in page


async def test_runner_reports_the_apply_ending(tmp_path: Path) -> None:
    ended: asyncio.Queue[int] = asyncio.Queue()

    async def on_exit(status: int) -> None:
        await ended.put(status)

    runner = SetupRunner(tmp_path, [sys.executable, "-c", "raise SystemExit(3)"],
                         on_exit=on_exit)
    await runner.start()
    assert await asyncio.wait_for(ended.get(), timeout=30) == 3
    assert not runner.running()
