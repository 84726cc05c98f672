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
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nio
import pytest

from memu_agent import model, stack
from memu_common import container_lock as lock
from memu_dev import hoststack, matrix, standins
from memu_dev.engine import Engine
from memu_firstboot import provision

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


def test_the_assistant_starts_once_it_has_an_account_and_answers_help(
        family: hoststack.Chat, engine: Engine) -> None:
    assert family.not_started["intelligence"].startswith("off: the assistant's Matrix account")
    _, bot = hoststack.start_bot(engine, family, "memu-test-family")

    parent = matrix.register(family.inside, family.shared_secret, "parent", "parent pw 5678")
    reply = asyncio.run(_ask_in_new_room(family.base, parent, bot.user_id, "/help"))
    assert "/remember" in reply, reply


async def _ask_in_new_room(base: str, user: matrix.Registered, bot_id: str, text: str,
                           deadline_s: float = 60) -> str:
    """Through nginx, as a family member's app: a room with the bot, ``text`` sent, the
    body of the bot's first message in reply."""
    client = nio.AsyncClient(base, user.user_id, device_id=user.device_id)
    client.access_token, client.user_id = user.access_token, user.user_id
    try:
        room = await client.room_create(invite=[bot_id])
        assert isinstance(room, nio.RoomCreateResponse), room
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            members = await client.joined_members(room.room_id)
            if isinstance(members, nio.JoinedMembersResponse) and bot_id in {
                    m.user_id for m in members.members}:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"{bot_id} did not join within {deadline_s} s")
        sent = await client.room_send(room.room_id, "m.room.message",
                                      {"msgtype": "m.text", "body": text})
        assert isinstance(sent, nio.RoomSendResponse), sent
        while time.monotonic() < end:
            msgs = await client.room_messages(room.room_id, limit=20)
            assert isinstance(msgs, nio.RoomMessagesResponse), msgs
            for ev in msgs.chunk:
                src = ev.source
                if src.get("sender") == bot_id and src.get("type") == "m.room.message" and \
                        src["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get(
                            "event_id") == sent.event_id:
                    return str(src["content"]["body"])
            await asyncio.sleep(0.5)
        raise AssertionError(f"no reply to {text!r} from {bot_id} within {deadline_s} s")
    finally:
        await client.close()


def test_setup_provisions_the_accounts_and_the_family_room_once(
        family: hoststack.Chat) -> None:
    """memu_firstboot.provision against the real Synapse: a second run (Retry, or after a
    power cut) finds what the first made; another password for a taken name is refused in
    words; the family room is private, unencrypted, with the assistant in it."""
    asyncio.run(_provision_twice(family))


async def _provision_twice(family: hoststack.Chat) -> None:
    secret, name = family.shared_secret, hoststack.SERVER_NAME
    async with aiohttp.ClientSession() as session:
        hs = provision.Homeserver(session, family.inside)
        runs = []
        for _ in range(2):
            admin = await hs.ensure_account(secret, "ada", "purple-kettle-sings", admin=True)
            helper = await hs.ensure_account(secret, "memu-helper", "generated secret 1")
            room = await hs.ensure_family_room(admin, name, "The Okafors", (helper.user_id,))
            await hs.join(helper, room)
            runs.append((admin, helper, room))
        (admin, helper, room), (admin2, helper2, room2) = runs
        assert (admin2.user_id, helper2.user_id, room2) == (admin.user_id, helper.user_id, room)
        assert admin.user_id == f"@ada:{name}" and admin2.device_id != admin.device_id
        assert await hs.whoami(helper.access_token) == helper.user_id
        assert await hs.whoami("not-a-token") is None
        with pytest.raises(provision.MatrixError, match="already exists with another password"):
            await hs.ensure_account(secret, "ada", "someone else's password")
        assert await hs.room_by_alias(f"#family:{name}") == room

        async def room_api(path: str) -> tuple[int, dict[str, Any]]:
            async with session.get(f"{family.inside}/_matrix/client/v3/rooms/{room}/{path}",
                                   headers={"Authorization": f"Bearer {admin.access_token}"}
                                   ) as r:
                return r.status, await r.json()

        status, members = await room_api("joined_members")
        assert status == 200 and set(members["joined"]) == {admin.user_id, helper.user_id}
        _, rules = await room_api("state/m.room.join_rules/")
        assert rules["join_rule"] == "invite"
        assert (await room_api("state/m.room.encryption/"))[0] == 404
