"""The whole family stack on the host's Docker, started as the box starts it
(memu_dev.hoststack), with the registry images replaced by stand-ins (memu_dev.standins: same
ports, health endpoints and protocol; the real Element, Immich and Ollama images are not
exercised here) as the device's pull leaves them in pulled.env. Checks the routes nginx
serves (the chat client, server discovery, photos on their own port), the configuration the
stack mounts (Element's homeserver, Immich's database with its extensions), health by service
name, and what the family sees when photos are not there."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from memu_agent import admin_pages, assistant, model, recover_pages, stack
from memu_agent.admin_pages import SignIn
from memu_agent.app import make_app
from memu_agent.config import AgentConfig
from memu_agent.facts import HostPaths
from memu_common import container_lock as lock
from memu_common.files import read_env_file
from memu_dev import hoststack, matrix, standins
from memu_dev.engine import Engine
from memu_firstboot import apply, progress, provision, stack_config
from memu_firstboot.form import SetupRequest
from memu_firstboot.state import SETUP_DONE_MARKER
from memu_ota.config import OtaConfig

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def family(engine: Engine, images: dict[str, lock.LockEntry],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[hoststack.Chat]:
    pulled = standins.build(engine, images["intelligence"].ref)
    workdir = tmp_path_factory.mktemp("family")
    # Both RAM-hungry services on, whatever this host's RAM; remote access stays off (no key).
    with hoststack.chat(engine, workdir, "memu-test-family", pulled=pulled,
                        optional={"immich-ml": "on", "ollama": "on"}) as running:
        yield running


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get_content_type(), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get_content_type(), e.read().decode()


def test_every_service_runs_healthy_and_reports_by_name(
        family: hoststack.Chat, engine: Engine) -> None:
    assert set(family.by_service) == {"postgres", "valkey", "synapse", "proxy", "element",
                                      "immich-server", "immich-ml", "ollama"}
    assert family.not_started["tailscale"].startswith("off: remote access is off")
    socket = Path(engine.host.removeprefix("unix://"))
    states = asyncio.run(stack.services(socket, "memu-test-family"))
    assert {name: s["health"] for name, s in states.items()} == dict.fromkeys(
        family.by_service, "healthy") | {"valkey": "healthy"}


def test_nginx_routes_the_chat_client_and_server_discovery(family: hoststack.Chat) -> None:
    status, kind, body = get(f"{family.base}/")
    assert (status, kind) == (200, "text/html") and "Element" in body
    status, _, body = get(f"{family.base}/config.json")
    config = json.loads(body)
    assert config["default_server_config"]["m.homeserver"] == {
        "base_url": f"http://{hoststack.SERVER_NAME}", "server_name": hoststack.SERVER_NAME}
    assert config["disable_guests"] is True
    # Phone apps find the homeserver from the server name (served by Synapse).
    _, _, body = get(f"{family.base}/.well-known/matrix/client")
    assert json.loads(body)["m.homeserver"]["base_url"] == f"http://{hoststack.SERVER_NAME}/"
    # Element makes new rooms unencrypted (the assistant reads them; nothing leaves the box).
    assert json.loads(body)["io.element.e2ee"] == {"default": False}
    _, _, body = get(f"{family.base}/.well-known/matrix/server")
    assert json.loads(body)["m.server"].startswith(hoststack.SERVER_NAME)
    # Synapse's admin API stays unreachable, also next to the client's catch-all.
    assert get(f"{family.base}/_synapse/admin/v1/server_version")[0] == 404


def test_photos_on_their_own_port_with_their_database(family: hoststack.Chat) -> None:
    # The stand-in answers its ping only once it has connected as Immich, with the password
    # the stack made for it, to a database holding the extensions Immich needs.
    status, _, body = get(f"{family.photos}/api/server/ping")
    assert (status, json.loads(body)) == (200, {"res": "pong"})


def test_photos_not_running_says_so_in_words(family: hoststack.Chat, engine: Engine) -> None:
    name = family.by_service["immich-server"]
    engine.docker("stop", "--time", "2", name)
    try:
        status, kind, body = get(f"{family.photos}/")
        assert (status, kind) == (503, "text/plain")
        assert "Photos are not running yet" in body
        # Chat is not affected.
        assert get(f"{family.base}/_matrix/client/versions")[0] == 200
    finally:
        engine.docker("start", name)
        engine.wait_healthy(name, timeout=120)


def test_the_llm_model_is_downloaded_with_progress(
        family: hoststack.Chat, engine: Engine, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{engine.port(family.by_service['ollama'], '11434/tcp')}"
    status = tmp_path / "model.json"
    seen: list[dict[str, object]] = []

    class Recorded(model.ModelPull):
        def report(self, force: bool = True) -> None:
            super().report(force=True)  # every step, to see the progress
            seen.append(json.loads(status.read_text())["models"].get("standin-chat:3b", {}))

    pull = Recorded(url=url, status_path=status, wait_s=30)
    assert asyncio.run(pull.run(["standin-chat:3b", "standin-embed"]))
    final = json.loads(status.read_text())
    assert final["state"] == "ready"
    assert final["models"]["standin-chat:3b"]["state"] == "pulled"
    progress = [(m["bytes"], m["total"]) for m in seen if m.get("state") == "pulling"]
    assert progress[-1] == (8 << 20, 8 << 20) and any(0 < b < t for b, t in progress)

    # A second run finds them there (Ollama lists "standin-embed" as "standin-embed:latest").
    again = model.ModelPull(url=url, status_path=status, wait_s=30)
    assert asyncio.run(again.run(["standin-chat:3b", "standin-embed"]))
    assert {m["state"] for m in again.status["models"].values()} == {"present"}

    # A model Ollama's library does not have: refused by name, in Ollama's words.
    wrong = model.ModelPull(url=url, status_path=status, wait_s=30)
    assert not asyncio.run(wrong.run(["no-such-model:1b"]))
    error = json.loads(status.read_text())["models"]["no-such-model:1b"]["error"]
    assert json.loads(status.read_text())["state"] == "failed"
    assert "no-such-model:1b" in error and "file does not exist" in error


def test_setup_apply_makes_the_family_room_where_the_assistant_answers(
        family: hoststack.Chat, engine: Engine, tmp_path: Path) -> None:
    """The first-boot apply's chat steps (memu_firstboot.apply: secrets, accounts, family
    room, assistant) against the real Synapse, twice (Retry, or a run after a power cut,
    makes nothing new); then the assistant, started with the account the apply recorded,
    answers /help in the family room as the admin's app sees it. Then the admin signs in
    to the box's admin page (checked by this Synapse) and adds, resets and removes a family
    member there."""
    assert family.not_started["intelligence"].startswith("off: the assistant's Matrix account")
    state = tmp_path / "state"
    state.mkdir()
    request = apply.StoredRequest(
        SetupRequest("The Okafors", "ada.apply", "purple-kettle-sings", "Europe/London",
                     "en-GB"), hoststack.SERVER_NAME)
    # The stack runs already (hoststack.chat made its configuration); the apply's own
    # start and reload commands are the box's systemctl calls, not run here.
    # Photos are not there at setup here (as on a box whose Immich is still downloading):
    # the admin's first sign-in to /admin makes their administrator (below).
    box = apply.Box(state_dir=state, config_dir=family.config, synapse_url=family.inside,
                    start_stack=("true",), reload_stack=("true",),
                    immich_url="http://127.0.0.1:9")
    chat_steps = tuple(s for s in apply.STEPS if s.name not in ("config", "database"))
    results = []
    for _ in range(2):
        apply.save_request(state, request)
        assert asyncio.run(apply.apply(box, chat_steps))
        body = json.loads((state / progress.PROGRESS_FILE).read_text())
        assert body["state"] == "done", body
        results.append({s["name"]: s["message"] for s in body["steps"]})
        assert not (state / apply.REQUEST_FILE).exists()  # the password is gone
    first, second = results
    assert first["accounts"] == second["accounts"] == (
        f"@ada.apply:{hoststack.SERVER_NAME} (admin) and @memu:{hoststack.SERVER_NAME} "
        "(the assistant)")
    assert first["secrets"].startswith("made ") and second["secrets"] == (
        "kept the secrets made earlier")
    assert first["family-room"] == second["family-room"]
    assert "sign in to the box's admin page" in second["photos"]
    account = read_env_file(family.config / stack_config.BOT_ACCOUNT)
    assert account["MEMU_BOT_USER_ID"] == f"@memu:{hoststack.SERVER_NAME}"

    asyncio.run(_check_the_family_room(family, account["MEMU_BOT_USER_ID"]))

    hoststack.start_assistant(engine, family, "memu-test-family")
    admin = matrix.sign_in(family.base, "ada.apply", "purple-kettle-sings")
    reply = asyncio.run(matrix.ask_in_room(family.base, admin,
                                           f"#family:{hoststack.SERVER_NAME}",
                                           account["MEMU_BOT_USER_ID"], "/help"))
    assert "/remember" in reply, reply
    _signed_out_and_back(engine, family, admin, account)

    # Immich's own port, past nginx (a restarted container has a new random one here).
    immich = f"http://127.0.0.1:{engine.port(family.by_service['immich-server'], '2283/tcp')}"
    asyncio.run(_admin_manages_a_member(family, immich, tmp_path))


def _signed_out_and_back(engine: Engine, family: hoststack.Chat, admin: matrix.Registered,
                         account: dict[str, str]) -> None:
    """The assistant's session ends (its token revoked): its container's health check says
    "signed out"; the box's watch (memu_agent.assistant) signs it back in and reloads the
    stack, which re-creates the container with the new account; /help is answered again."""
    name = "memu-test-family-intelligence-1"
    old_id = engine.inspect("container", name)["Id"]
    matrix.sign_out(family.inside, account["MEMU_BOT_ACCESS_TOKEN"])
    deadline = time.monotonic() + 60
    while "signed out" not in engine.last_health_output(name):
        assert time.monotonic() < deadline, engine.last_health_output(name)
        time.sleep(0.5)

    async def reload_stack() -> None:
        await asyncio.to_thread(hoststack.start_assistant, engine, family, "memu-test-family")

    verdict = asyncio.run(assistant.Watch(family.config, family.inside, reload_stack).check())
    assert verdict.session is assistant.Session.SIGNED_IN, verdict
    assert "signed it back in" in verdict.message
    fresh = read_env_file(family.config / stack_config.BOT_ACCOUNT)
    assert fresh["MEMU_BOT_ACCESS_TOKEN"] != account["MEMU_BOT_ACCESS_TOKEN"]
    assert engine.inspect("container", name)["Id"] != old_id  # re-created, new environment
    reply = asyncio.run(matrix.ask_in_room(family.base, admin,
                                           f"#family:{hoststack.SERVER_NAME}",
                                           fresh["MEMU_BOT_USER_ID"], "/help"))
    assert "/remember" in reply, reply


async def _check_the_family_room(family: hoststack.Chat, bot_id: str) -> None:
    """What the apply made, seen through Synapse's APIs: the family room is private,
    unencrypted, with the admin and the assistant in it; a taken name with another password
    is refused in words."""
    name = hoststack.SERVER_NAME
    async with aiohttp.ClientSession() as session:
        hs = provision.Homeserver(session, family.inside)
        admin = await hs.login("ada.apply", "purple-kettle-sings")
        assert await hs.whoami(admin.access_token) == f"@ada.apply:{name}"
        assert await hs.whoami("not-a-token") is None
        with pytest.raises(provision.MatrixError, match="already exists with another password"):
            await hs.ensure_account(family.shared_secret, "ada.apply", "someone else's pw")
        room = await hs.room_by_alias(f"#family:{name}")

        async def room_api(path: str) -> tuple[int, dict[str, Any]]:
            async with session.get(f"{family.inside}/_matrix/client/v3/rooms/{room}/{path}",
                                   headers={"Authorization": f"Bearer {admin.access_token}"}
                                   ) as r:
                return r.status, await r.json()

        status, members = await room_api("joined_members")
        assert status == 200 and set(members["joined"]) == {admin.user_id, bot_id}
        _, rules = await room_api("state/m.room.join_rules/")
        assert rules["join_rule"] == "invite"
        assert (await room_api("state/m.room.encryption/"))[0] == 404



async def _admin_manages_a_member(family: hoststack.Chat, immich: str, tmp_path: Path
                                  ) -> None:
    """The agent's admin pages (memu_agent.admin_pages) on this Synapse, as a browser uses
    them: a family member's password and a wrong one do not sign in, the admin's does; the
    admin adds Tunde (a generated password, shown once, signs in; Tunde is in the family
    room), gives him a new password (the old one stops working), removes him (he cannot
    sign in); signing out ends the chat session the page held. The admin's sign-in also
    made photos' administrator at ``immich``."""
    base = family.inside
    matrix.register(base, family.shared_secret, "bola", "quiet-river-77")
    app = make_app(_agent_config(tmp_path), paths=_host(tmp_path), synapse_url=base,
                   immich_url=immich)
    async with TestClient(TestServer(app)) as client:
        for name, password, status in (("bola", "quiet-river-77", 403),
                                       ("ada.apply", "not the password", 403),
                                       ("ada.apply", "purple-kettle-sings", 303)):
            form = await (await client.get("/admin/sign-in")).text()
            resp = await client.post("/admin/sign-in", allow_redirects=False, data={
                "username": name, "password": password, "csrf": _csrf(form)})
            assert resp.status == status, (name, await resp.text())
        page = await (await client.get("/admin")).text()
        assert f"@ada.apply:{hoststack.SERVER_NAME}" in page and "@bola:" in page
        await _photos_administrator_is_the_admin(family, page)
        long_name = await client.post("/admin/members", data={
            "username": "tunde", "display_name": "T" * 80, "csrf": _csrf(page)})
        assert long_name.status == 400, await long_name.text()
        added = await client.post("/admin/members", data={
            "username": "tunde", "display_name": "Tunde", "csrf": _csrf(page)})
        text = await added.text()
        assert added.status == 200, text
        first = _shown_password(text)
        tunde = matrix.sign_in(base, "tunde", first)
        async with aiohttp.ClientSession() as session:  # the family room, as Tunde's app
            room = await provision.Homeserver(session, base).room_by_alias(
                f"#family:{hoststack.SERVER_NAME}")
            assert room is not None
            async with session.get(
                    f"{base}/_matrix/client/v3/rooms/{room}/joined_members",
                    headers={"Authorization": f"Bearer {tunde.access_token}"}) as r:
                assert tunde.user_id in (await r.json())["joined"]
        again = await client.post("/admin/members", data={
            "username": "tunde", "csrf": _csrf(text)})
        assert again.status == 409 and "is taken" in await again.text()
        reset = await client.post("/admin/members/password", data={
            "username": "tunde", "csrf": _csrf(text)})
        text = await reset.text()
        second = _shown_password(text)
        assert second != first
        with pytest.raises(urllib.error.HTTPError):
            matrix.sign_in(base, "tunde", first)
        matrix.sign_in(base, "tunde", second)
        removed = await client.post("/admin/members/remove", data={
            "username": "tunde", "csrf": _csrf(text)})
        text = await removed.text()
        assert removed.status == 200 and "can no longer sign in" in text
        with pytest.raises(urllib.error.HTTPError):
            matrix.sign_in(base, "tunde", second)
        mine = await client.post("/admin/members/remove", data={
            "username": "ada.apply", "csrf": _csrf(text)})
        assert mine.status == 400 and "your own account" in await mine.text()
        out = await client.post("/admin/sign-out", allow_redirects=False,
                                data={"csrf": _csrf(text)})
        assert out.status == 303
    me = matrix.sign_in(base, "ada.apply", "purple-kettle-sings")
    async with aiohttp.ClientSession() as session, session.get(
            f"{base}/_matrix/client/v3/devices",
            headers={"Authorization": f"Bearer {me.access_token}"}) as r:
        devices = (await r.json())["devices"]
    assert not [d for d in devices if d.get("display_name") == admin_pages.DEVICE_NAME]
    gone = admin_pages.synapse_checker("http://127.0.0.1:9")
    assert (await gone("ada.apply", "purple-kettle-sings"))[0] is SignIn.UNREACHABLE

    # The admin forgot the password: someone at the box resets it (the code check is in
    # tests/agent/test_recover_pages.py); here the reset itself, with the stack's secret.
    recover = recover_pages.synapse_recoverer(
        base, family.config / stack_config.REGISTRATION_SECRET)
    await recover(f"@ada.apply:{hoststack.SERVER_NAME}", "new-kettle-whistles")
    with pytest.raises(urllib.error.HTTPError):
        matrix.sign_in(base, "ada.apply", "purple-kettle-sings")
    again = matrix.sign_in(base, "ada.apply", "new-kettle-whistles")
    async with aiohttp.ClientSession() as session:
        hs = provision.Homeserver(session, base)
        members = await hs.members(provision.Account(again.user_id, again.access_token,
                                                     again.device_id))
    assert not [m for m in members if m.user_id.startswith("@memu-recovery-")], members


async def _photos_administrator_is_the_admin(family: hoststack.Chat, page: str) -> None:
    """The admin's sign-in made photos' administrator (Immich's stand-in, on its loopback
    port) with the admin's password; through nginx (the LAN's way in) nobody else can make
    one, and the admin signs in there."""
    email = f"ada.apply@{hoststack.SERVER_NAME}"
    assert f"Your photos account: <b>{email}</b>" in page
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{family.photos}/api/server/config") as r:
            assert (await r.json())["isInitialized"] is True
        async with session.post(f"{family.photos}/api/auth/admin-sign-up", json={
                "email": "neighbour@example.org", "name": "x", "password": "x"}) as r:
            assert r.status == 403
            assert "The box makes the photos administrator" in (await r.json())["message"]
        async with session.post(f"{family.photos}/api/auth/login", json={
                "email": email, "password": "purple-kettle-sings"}) as r:
            assert r.status == 201, await r.text()


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def _shown_password(page: str) -> str:
    found = re.search(r"password <b><code>([a-z0-9-]+)</code></b>", page)
    assert found, page[:3000]
    return found.group(1)


def _agent_config(tmp_path: Path) -> AgentConfig:
    state = tmp_path / "agent"
    (state / SETUP_DONE_MARKER).parent.mkdir(parents=True, exist_ok=True)
    (state / SETUP_DONE_MARKER).write_text("")
    return AgentConfig(state_dir=state, issue_dir=tmp_path / "issue.d", ota=OtaConfig(
        isolate=False, sysupdate=tmp_path / "no-sysupdate", template_dir=tmp_path / "tpl",
        runtime_dir=tmp_path / "run", state_dir=state / "ota", esp_dirs=(tmp_path / "esp",)))


def _host(tmp_path: Path) -> HostPaths:
    """A host tree with what the pages read: os-release and the host name."""
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=memu\nIMAGE_VERSION="0.1.0"\n')
    (root / "proc" / "sys" / "kernel").mkdir(parents=True)
    (root / "proc" / "sys" / "kernel" / "hostname").write_text("memu\n")
    return HostPaths(os_release=(root / "etc" / "os-release",), proc=root / "proc",
                     sys=root / "sys",
                     preload_status=root / "preload.json", pull_status=root / "pull.json",
                     docker_socket=root / "docker.sock", data=root)
