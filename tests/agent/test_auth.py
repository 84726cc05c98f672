"""The agent's auth layer: every route x every credential, before and after setup; back-off;
Host and Origin checks; the claim; the setup code never leaks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from agent_fixtures import session_headers
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from memu_agent.app import make_app
from memu_agent.auth import AUTH, host_allowed, origin_allowed
from memu_agent.config import AgentConfig
from memu_agent.facts import HostPaths
from memu_agent.ratelimit import FailureLimiter, client_key
from memu_agent.sessions import COOKIE
from memu_common.access import Access, route_access
from memu_firstboot.setup_token import ensure_token
from memu_firstboot.state import SETUP_DONE_MARKER
from memu_ota.updater import Updater

Client = TestClient[web.Request, web.Application]

# Every route the agent serves and the access it must declare. A route added without a row
# here (or without a declared access) fails test_every_route_declares_its_access.
ROUTES: dict[tuple[str, str], Access] = {
    ("GET", "/"): Access.OPEN,
    ("HEAD", "/"): Access.OPEN,
    ("GET", "/static/firstboot.css"): Access.OPEN,
    ("HEAD", "/static/firstboot.css"): Access.OPEN,
    ("GET", "/api/status"): Access.OPEN,
    ("HEAD", "/api/status"): Access.OPEN,
    ("GET", "/api/update"): Access.OPEN,
    ("HEAD", "/api/update"): Access.OPEN,
    ("POST", "/api/update"): Access.ADMIN,
    ("POST", "/api/factory-reset"): Access.ADMIN,
    ("POST", "/api/claim"): Access.CLAIM,
    ("POST", "/setup"): Access.CLAIM,
    ("POST", "/setup/retry"): Access.CLAIM,
    ("GET", "/setup/claim"): Access.CLAIM,
    ("HEAD", "/setup/claim"): Access.CLAIM,
    ("GET", "/setup/progress"): Access.OPEN,
    ("HEAD", "/setup/progress"): Access.OPEN,
    ("GET", "/setup/ready"): Access.OPEN,
    ("HEAD", "/setup/ready"): Access.OPEN,
    ("GET", "/api/setup"): Access.OPEN,
    ("HEAD", "/api/setup"): Access.OPEN,
    ("GET", "/static/setup.js"): Access.OPEN,
    ("HEAD", "/static/setup.js"): Access.OPEN,
    ("GET", "/admin"): Access.ADMIN,
    ("HEAD", "/admin"): Access.ADMIN,
    ("GET", "/admin/sign-in"): Access.OPEN,
    ("HEAD", "/admin/sign-in"): Access.OPEN,
    ("POST", "/admin/sign-in"): Access.OPEN,
    ("GET", "/admin/recover"): Access.OPEN,
    ("HEAD", "/admin/recover"): Access.OPEN,
    ("POST", "/admin/recover"): Access.OPEN,
    ("POST", "/admin/sign-out"): Access.ADMIN,
    ("POST", "/admin/members"): Access.ADMIN,
    ("POST", "/admin/members/password"): Access.ADMIN,
    ("POST", "/admin/members/remove"): Access.ADMIN,
    # The front door (test_front_door.py): any method, passed to the stack's nginx.
    ("*", "/_matrix/{tail}"): Access.PROXIED,
    ("*", "/_synapse/client/{tail}"): Access.PROXIED,
    ("*", "/.well-known/matrix/{tail}"): Access.PROXIED,
    # After setup, the chat web client's files (any other GET path) through nginx.
    ("GET", "/{tail}"): Access.PROXIED,
    ("HEAD", "/{tail}"): Access.PROXIED,
}
# Bodies that reach a handler without changing the box (the handler answers 400), except
# the claim, which is harmless to repeat.
BODIES: dict[str, dict[str, str]] = {
    "/api/update": {"action": "nothing"},
    "/api/factory-reset": {"confirm": "no"},
    "/api/claim": {},
    "/admin/recover": {},  # no password: 400 before the (absent) code is looked at
}
IN = "reached the handler"  # 200 or 400: what the handler said, not the auth layer
CREDENTIALS = ("none", "wrong code", "right code", "admin session", "api token")
EXPECTED: dict[tuple[Access, bool], dict[str, int | str]] = {
    (Access.OPEN, False): dict.fromkeys(CREDENTIALS, IN),
    (Access.OPEN, True): dict.fromkeys(CREDENTIALS, IN),
    (Access.CLAIM, False): {"none": 401, "wrong code": 403, "right code": IN,
                            "admin session": 403, "api token": 403},
    (Access.CLAIM, True): dict.fromkeys(CREDENTIALS, 410),
    (Access.ADMIN, False): {"none": 401, "wrong code": 403, "right code": IN,
                            "admin session": 403, "api token": 403},
    (Access.ADMIN, True): {"none": 401, "wrong code": 403, "right code": 403,
                           "admin session": IN, "api token": IN},
}
API_TOKEN = "script-token-0123456789"


@pytest.fixture
def make_client(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths, tmp_path: Path
) -> Callable[..., Awaitable[Client]]:
    """Builds a test client of the agent; the reboot hook only records."""
    fake = tmp_path / "fake-sysupdate"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "templates" / "10-usr.transfer.in").write_text("[Source]\nPath=@SOURCE_URL@\n")
    reboots: list[int] = []

    async def build(limiter: FailureLimiter | None = None) -> Client:
        ota = replace(config.ota, sysupdate=fake)
        updater = Updater(ota, running="0.3.1", boot_id="b")
        await updater.start(periodic=False)
        app = make_app(replace(config, ota=ota), paths=host, updater=updater,
                       reboot=lambda: reboots.append(1), limiter=limiter)
        app.on_cleanup.append(lambda _app: updater.stop())
        return await aiohttp_client(app)

    return build


def _set_up(state_dir: Path) -> None:
    (state_dir / SETUP_DONE_MARKER).write_text("")
    (state_dir / "api-token").write_text(API_TOKEN + "\n")


def _headers(client: Client, credential: str, code: str) -> dict[str, str]:
    if credential == "wrong code":
        return {"X-Memu-Setup-Code": "aaaa-bbbb-cccc"}
    if credential == "right code":
        return {"X-Memu-Setup-Code": code}
    if credential == "admin session":
        return session_headers(client.app[AUTH].sessions.new_admin())
    if credential == "api token":
        return {"Authorization": f"Bearer {API_TOKEN}"}
    return {}


async def test_every_route_declares_its_access(
    make_client: Callable[..., Awaitable[Client]]
) -> None:
    client = await make_client()
    served = {(r.method, r.resource.canonical): route_access(client.app, r.handler)
              for r in client.app.router.routes() if r.resource is not None}
    assert served == ROUTES


async def test_a_route_without_declared_access_is_refused(
    aiohttp_client: AiohttpClient, config: AgentConfig, host: HostPaths
) -> None:
    app = make_app(config, paths=host)

    async def sneaky(request: web.Request) -> web.Response:
        return web.Response(text="should never run")

    app.router.add_post("/api/sneaky", sneaky)
    assert route_access(app, sneaky) is None
    client = await aiohttp_client(app)
    for method in ("GET", "POST"):
        resp = await client.request(method, "/api/sneaky")
        # GET: the front door's catch-all (the chat client's files) answers first: 404.
        assert resp.status in (404, 405, 500)
        assert await resp.text() != "should never run"
    resp = await client.post("/api/sneaky", headers={"X-Memu-Setup-Code":
                                                     ensure_token(config.state_dir)})
    assert resp.status == 500 and "no access policy" in (await resp.json())["error"]


@pytest.mark.parametrize("set_up", [False, True], ids=["before-setup", "after-setup"])
async def test_route_by_credential_table(
    make_client: Callable[..., Awaitable[Client]], config: AgentConfig, set_up: bool
) -> None:
    client = await make_client(FailureLimiter(free=10_000))
    code = ensure_token(config.state_dir)
    if set_up:
        _set_up(config.state_dir)
    got: dict[tuple[str, str, str], int | str] = {}
    want: dict[tuple[str, str, str], int | str] = {}
    for (method, path), access in ROUTES.items():
        if access is Access.PROXIED:
            continue  # the service behind authenticates; see test_front_door.py
        for credential in CREDENTIALS:
            client.session.cookie_jar.clear()
            headers = _headers(client, credential, code)
            body = BODIES.get(path) if method == "POST" else None
            resp = await client.request(method, path, json=body, headers=headers)
            got[method, path, credential] = IN if resp.status in (200, 400) else resp.status
            want[method, path, credential] = EXPECTED[access, set_up][credential]
            if resp.status in (401, 403, 410) and resp.content_type == "application/json":
                assert (await resp.json())["hint"], (method, path, credential)
    assert got == want
    assert not (config.state_dir / "factory-reset").exists()


async def test_back_off_after_repeated_wrong_codes_and_recovery(
    make_client: Callable[..., Awaitable[Client]], config: AgentConfig
) -> None:
    now = [1000.0]
    client = await make_client(FailureLimiter(free=5, base_s=2.0, clock=lambda: now[0]))
    code = ensure_token(config.state_dir)
    wrong = {"X-Memu-Setup-Code": "aaaa-bbbb-cccc"}
    check = {"action": "check"}
    for _ in range(6):  # 5 free tries, the 6th counts and starts the back-off
        assert (await client.post("/api/update", json=check, headers=wrong)).status == 403
    blocked = await client.post("/api/update", json=check, headers={"X-Memu-Setup-Code": code})
    assert blocked.status == 429  # even the right code waits: no guessing while blocked
    assert blocked.headers["Retry-After"] == "2"
    assert "wait 2 seconds" in (await blocked.json())["hint"]
    assert (await client.get("/api/status")).status == 200  # the page stays up
    now[0] += 2.1
    assert (await client.post("/api/update", json=check, headers=wrong)).status == 403
    assert (await client.post("/api/update", json=check, headers=wrong)).status == 429
    now[0] += 4.1  # the second wait doubled
    resp = await client.post("/api/update", json={"action": "nothing"},
                             headers={"X-Memu-Setup-Code": code})
    assert resp.status == 400  # in: the handler answered
    # success forgot the failures: five free tries again
    for _ in range(5):
        assert (await client.post("/api/update", json=check, headers=wrong)).status == 403


def test_back_off_memory_is_bounded_and_grows_to_a_cap() -> None:
    now = [0.0]
    limiter = FailureLimiter(free=0, base_s=1.0, max_s=8.0, max_clients=100,
                             clock=lambda: now[0])
    for i in range(10_000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    waits = [limiter.failed("192.0.2.1") for _ in range(6)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    now[0] += 3600
    assert limiter.retry_after("192.0.2.1") == 0.0  # forgotten after an hour


def test_client_key_groups_ipv6_by_64() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2::5") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::5") != client_key("2001:db8:1:3::5")
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key(None) == "unknown"


async def test_foreign_host_and_cross_site_posts_are_refused(
    make_client: Callable[..., Awaitable[Client]], config: AgentConfig
) -> None:
    client = await make_client()
    code = {"X-Memu-Setup-Code": ensure_token(config.state_dir)}
    source = {"action": "source", "channel": "beta", "base_url": "http://evil.example/"}
    refused = [
        {"Host": "evil.example"},  # DNS rebinding: a stranger's name pointing at the box
        {"Host": "memu.local.evil.example"},
        {"Origin": "http://evil.example"},  # a page elsewhere posting through a browser
        {"Origin": "null"},
        {"Origin": f"http://127.0.0.1:{client.port + 1}"},
        {"Sec-Fetch-Site": "cross-site"},
    ]
    for extra in refused:
        resp = await client.post("/api/update", json=source, headers={**code, **extra})
        assert resp.status == 403, extra
        assert (await resp.json())["hint"]
        resp = await client.post("/api/factory-reset", json={"confirm": "erase all family data"},
                                 headers={**code, **extra})
        assert resp.status == 403, extra
    assert not (config.ota.state_dir / "settings.json").exists()
    assert not (config.state_dir / "factory-reset").exists()
    # the box's own names and its own page are fine
    for extra in ({"Host": "memu-box.local"}, {"Host": "MEMU-BOX"},
                  {"Origin": f"http://127.0.0.1:{client.port}"},
                  {"Sec-Fetch-Site": "same-origin"}):
        resp = await client.post("/api/update", json={"action": "nothing"},
                                 headers={**code, **extra})
        assert resp.status == 400, extra
    # read-only pages answer whatever the Host (a rebinding page learns nothing secret)
    assert (await client.get("/", headers={"Host": "evil.example"})).status == 200


def test_host_and_origin_rules() -> None:
    names = ("memu", "memu.local", "localhost")
    for ok in ("memu", "memu.local", "MEMU.LOCAL.", "memu.local:8080", "192.168.1.20",
               "192.168.1.20:80", "[fe80::1]", "[2001:db8::5]:8080", "localhost"):
        assert host_allowed(ok, names), ok
    for bad in ("", None, "evil.example", "memu.evil", "[nonsense]", "memu.local.evil"):
        assert not host_allowed(bad, names), bad
    assert origin_allowed(None, None, "memu.local")
    assert origin_allowed("http://memu.local", "same-origin", "memu.local")
    assert origin_allowed("https://memu.local:8443", None, "memu.local:8443")
    assert not origin_allowed("http://memu.local", "cross-site", "memu.local")
    assert not origin_allowed("file://", None, "memu.local")
    assert not origin_allowed("http://memu.local:81", None, "memu.local")


async def test_claim_takes_the_code_resets_the_update_source_and_replaces_the_session(
    make_client: Callable[..., Awaitable[Client]], config: AgentConfig
) -> None:
    client = await make_client()
    code = ensure_token(config.state_dir)
    # before the claim, whoever has the code moves the update source
    resp = await client.post("/api/update", headers={"X-Memu-Setup-Code": code}, json={
        "action": "source", "channel": "beta", "base_url": "http://elsewhere.example/os/"})
    assert resp.status == 202
    settings = config.ota.state_dir / "settings.json"
    assert settings.exists()
    # the first claim puts the image's settings back
    resp = await client.post("/api/claim", json={"setup_code": code.upper().replace("-", " ")})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"state": "claimed", "first": True}
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert not settings.exists()
    snapshot = await (await client.get("/api/update")).json()
    assert (snapshot["channel"], snapshot["base_url"]) == (config.ota.channel,
                                                           config.ota.base_url)
    first_session = resp.cookies[COOKIE].value
    # the claim session works for admin routes before setup
    client.session.cookie_jar.clear()
    as_first = session_headers(first_session)
    resp = await client.post("/api/update", json={"action": "nothing"}, headers=as_first)
    assert resp.status == 400
    # the session alone cannot claim again; the code can, and replaces it
    assert (await client.post("/api/claim", headers=as_first)).status == 403
    resp = await client.post("/api/claim", headers={"X-Memu-Setup-Code": code})
    assert resp.status == 200 and (await resp.json())["first"] is False
    second = resp.cookies[COOKIE].value
    client.session.cookie_jar.clear()
    assert (await client.post("/api/update", json={"action": "nothing"},
                              headers=as_first)).status == 401
    assert (await client.post("/api/update", json={"action": "nothing"},
                              headers=session_headers(second))).status == 400
    # the claim survives an agent restart (a power cut); setup closes it
    again = await make_client()
    assert (await again.post("/api/update", json={"action": "nothing"},
                             headers=session_headers(second))).status == 400
    _set_up(config.state_dir)
    assert (await again.post("/api/claim", headers={"X-Memu-Setup-Code": code})).status == 410
    assert (await again.post("/api/update", json={"action": "nothing"},
                             headers=session_headers(second))).status in (401, 403)


async def test_the_setup_code_never_leaves_the_box(
    make_client: Callable[..., Awaitable[Client]], config: AgentConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await make_client()
    code = ensure_token(config.state_dir)
    seen: list[str] = []
    requests: list[tuple[str, str, dict[str, str], object]] = [
        ("GET", "/", {}, None), ("GET", "/api/status", {}, None),
        ("GET", "/api/update", {}, None),
        ("POST", "/api/update", {}, {"action": "check"}),
        ("POST", "/api/update", {"X-Memu-Setup-Code": "aaaa-bbbb-cccc"}, {"action": "check"}),
        ("POST", "/api/update", {"X-Memu-Setup-Code": code}, {"action": "nothing"}),
        ("POST", "/api/claim", {}, {"setup_code": code}),
        ("POST", "/api/factory-reset", {"X-Memu-Setup-Code": code}, {"confirm": "no"}),
    ]
    for method, path, headers, body in requests:
        resp = await client.request(method, path, headers=headers, json=body)
        seen.append(str(dict(resp.headers)) + await resp.text())
    assert code not in "".join(seen)
    assert code not in caplog.text
    assert code.replace("-", "") not in "".join(seen) + caplog.text
